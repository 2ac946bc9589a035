"""Start a real `spyglass up --demo` for the browser e2e tests, with private names.

It reuses the e2e harness (tests/e2e/harness.py: `Up`, `stop_up` and its leftover
checks) and only changes the command line: `--demo` instead of `--manifest`, and
`--token` / `--store` when a test asks for them. Names (netns and link prefix
`sgui`, pod CIDR, pin dir, state dir, port) never collide with a user's demo
or with the other e2e tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from harness import SPYGLASS, Up, free_port, stop_up  # noqa: E402

PREFIX = "sgui"


def up_supports(flag: str) -> bool:
    """Whether this `spyglass up` has an option (token and store land with the API work)."""
    out = subprocess.run([SPYGLASS, "up", "--help"], capture_output=True, text=True, check=False)
    return flag in out.stdout


def start_demo(tmp: Path, *, token: str | None = None, store: str | None = None) -> Up:
    port = free_port()
    state_dir = str(tmp / "state")
    up = Up(proc=None, url=f"http://127.0.0.1:{port}", state_dir=state_dir,
            pin_dir=f"/sys/fs/bpf/spyglass-{PREFIX}-{os.getpid()}", prefix=PREFIX,
            log=tmp / "up.log", started=time.monotonic())
    cmd = [SPYGLASS, "up", "--demo", "--listen", f"127.0.0.1:{port}", "--state-dir", state_dir,
           "--pin-dir", up.pin_dir, "--prefix", PREFIX, "--link-prefix", PREFIX,
           "--pod-cidr", "10.198.9.0/24", "--node-name", "ui-e2e-node"]
    if token:
        cmd += ["--token", token]
    # never the user's default store: a private chDB (one process per path) unless given
    cmd += ["--store", store or f"chdb://{tmp / 'store'}"]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with up.log.open("wb") as log:
        up.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if up.proc.poll() is not None:
            pytest.fail(f"spyglass up --demo exited with {up.proc.returncode}:\n"
                        f"{up.log.read_text()}")
        try:
            if httpx.get(up.url + "/api/v1/status", headers=headers,
                         timeout=1).status_code == 200:
                up.ready_after_s = time.monotonic() - up.started
                return up
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_up(up)
    pytest.fail(f"spyglass up --demo did not serve the API within 120 s:\n{up.log.read_text()}")

