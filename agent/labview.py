"""The lab as the agent sees it: the latest snapshot of its state file, and a watcher.

The agent does not own the lab. It reads `lab.json` (through `Lab.load`) when it starts
and whenever the file changes (`spyglass lab add`, `lab delete`, `lab scale`, `service
apply` from any shell, or `lab down`), and reconciles the datapath with it. Enrichment
keeps asking the same `LabView` object while the snapshot behind it is swapped, so the
collector never holds a stale lab.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from spyglass.lab.errors import LabError
from spyglass.lab.lab import Lab
from spyglass.lab.state import state_path
from spyglass.model.flow import Service
from spyglass.model.getters import EndpointInfo

log = logging.getLogger(__name__)


class LabView:
    """EndpointGetter, IdentityGetter, ServiceGetter and InterfaceGetter over a swappable lab."""

    def __init__(self, lab: Lab) -> None:
        self._lab = lab

    @property
    def lab(self) -> Lab:
        return self._lab

    def swap(self, lab: Lab) -> Lab:
        """Put `lab` in place (one reference assignment); returns the one it replaced."""
        old, self._lab = self._lab, lab
        return old

    def endpoint_by_ip(self, ip: str) -> EndpointInfo | None:
        return self._lab.endpoint_by_ip(ip)

    def endpoint_by_id(self, ep_id: int) -> EndpointInfo | None:
        return self._lab.endpoint_by_id(ep_id)

    def labels_of(self, identity: int) -> tuple[str, ...] | None:
        return self._lab.labels_of(identity)

    def service_by_id(self, service_id: int) -> Service | None:
        return self._lab.service_by_id(service_id)

    def service_by_addr(self, ip: str, port: int) -> Service | None:
        return self._lab.service_by_addr(ip, port)

    def ifname(self, ifindex: int) -> str:
        return next((p.host_ifname for p in self._lab.pods if p.host_ifindex == ifindex), "")


def _signature(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class LabWatcher:
    """Calls `on_change(lab)` (or `on_gone()`) when the lab's state file changes.

    The file is replaced atomically on every change, so its inode, mtime and size say
    whether it changed; polling it four times a second costs one stat. The file as it is
    when the watcher is made counts as seen: make it before reading the lab, so that a
    change made while the agent starts is not missed.
    """

    def __init__(self, state_dir: str, on_change: Callable[[Lab], None],
                 on_gone: Callable[[], None], interval_s: float = 0.25) -> None:
        self.state_dir = state_dir
        self.path = state_path(state_dir)
        self.on_change = on_change
        self.on_gone = on_gone
        self.interval_s = interval_s
        self.errors = 0
        self._seen = _signature(self.path)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="spyglass-lab-watch",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def poll(self) -> bool:
        """Look once; True if something was reported.

        A change whose reconcile fails is tried again at the next poll: the datapath must
        not stay behind the lab because one attempt failed.
        """
        now = _signature(self.path)
        if now == self._seen:
            return False
        before, self._seen = self._seen, now
        if now is None:
            self.on_gone()
            return True
        try:
            lab = Lab.load(self.state_dir)
        except LabError:
            log.exception("the lab's state file changed but cannot be read; waiting for "
                          "the next change")
            self.errors += 1
            return False
        try:
            self.on_change(lab)
        except BaseException:
            self._seen = before
            raise
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except Exception:  # a reconcile that fails must not end the watch
                self.errors += 1
                if self.errors <= 3 or self.errors % 100 == 0:
                    log.exception("reconciling the datapath with the lab failed (%d times); "
                                  "trying again", self.errors)
