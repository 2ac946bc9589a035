"""The collector end to end on the real kernel path, against a bcc-default reader, in one run.

A lab of two pods (a sender and a receiver, from an inline manifest) and a UDP flood
between them (bench/flood_sender.c: 64-byte payloads, sendmmsg in bursts of 64, paced
on CLOCK_MONOTONIC, or as fast as it goes), with every packet traced (aggregation
none). For each rate of a ladder, one row: packets sent, events the datapath offered
(its own pinned per-CPU counters: sg_submit_ok + sg_submit_fail), events delivered to
the flow ring, flows written to the store, what was lost and where (the loss ledger by
source), the reader's CPU-seconds, events per CPU-second, and latency, for three
readers of the same datapath:

  spyglass, store chDB   `spyglass up --monitor-aggregation none` (the default store)
  spyglass, no store     the same with `--store none`
  bcc defaults           the same datapath (`Datapath`, as the agent loads it) read in
                         this process by bcc's `open_perf_buffer(cb)` +
                         `perf_buffer_poll()`, with bcc's defaults (8 pages per CPU,
                         a wakeup per event) and a Python callback that views each
                         event as `SgEvent` with ctypes and counts it: how most bcc
                         tools read

Latency. Spyglass: "packet to client": a WebSocket client of `/api/v1/flows/stream`
follows only the sender's probe datagrams (100/s from their own source port, among the
flood) and records its receive time minus the flow's `time` (the kernel's timestamp,
converted to the wall clock by the collector); it includes the perf wakeup, the
collector's batch, the ring, the stream's 50 ms poll and JSON. bcc: "packet to
callback": `time.monotonic_ns()` in the callback minus the event's `ts_ns`, for the
same probes. They are not the same span; both are printed under their own names.

Accounting, every row: offered == delivered + lost before the ring (PERF_EVENT_RING_BUFFER,
UNKNOWN_LOST_EVENT_SOURCE, AGENT_RESTART) + refused by the decoder; with a store also
delivered == written + STORE. HUBBLE_RING_BUFFER and CLIENT_QUEUE (a live client lapped
or too slow) are shown, but they are downstream of delivery. A rung is zero-loss when
nothing was lost before the ring or to the store.

--clients: in each rung of the Spyglass readers, two real `spyglass observe -f -o json`
clients: A filtered on the source port that 1 in 100 of the sender's datagrams come from
(FLOOD_SPLIT_SPORT), B unfiltered; per client, flows received and events told lost by
source, checked against 2 x the split datagrams (A) and the ring's delivered count (B).

Everything it makes is named by --prefix (netns `<prefix>-bench-*`, links `<prefix>*`,
pins /sys/fs/bpf/spyglass-<prefix>-*), lives under --state-dir, and is removed by name
and PID at the end, on error and on Ctrl-C. After a crash: `--cleanup`.

    sudo .venv/bin/python bench/collector_e2e.py [--rates 10000,20000,50000,100000,max]
        [--seconds 5] [--refine 3] [--clients] [--prefix sgbe]
        [--state-dir /tmp/sg/bench-e2e-state]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes as ct
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

HERE = Path(__file__).resolve().parent
SENDER_SOURCE = HERE / "flood_sender.c"
SPYGLASS = str(Path(sys.executable).with_name("spyglass"))
PY = "/usr/bin/python3"
NAMESPACE = "bench"
DST_PORT = 9000
SPORT = 40000
PROBE_SPORT = 40001
PROBE_MS = 10.0
#: --clients: 1 of every SPLIT_EVERY datagrams goes from SPLIT_SPORT (client A's filter).
SPLIT_SPORT = 40002
SPLIT_EVERY = 100
PAYLOAD = 64
BCC_DEFAULT_PAGES = 8  # bcc's open_perf_buffer(page_cnt=8, wakeup_events=1)

#: Losses before the flow ring: the events never reached it.
RING_STAGE = ("PERF_EVENT_RING_BUFFER", "UNKNOWN_LOST_EVENT_SOURCE", "AGENT_RESTART")
STORE_STAGE = ("STORE",)
#: A live client lapped by the ring or too slow for its queue: after delivery.
CLIENT_STAGE = ("HUBBLE_RING_BUFFER", "CLIENT_QUEUE")

RECEIVER_CODE = ("import signal, socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                 f"s.bind(('0.0.0.0', {DST_PORT})); signal.pause()")


class BenchError(RuntimeError):
    """The bench cannot run or cannot go on; the message says why."""


def manifest_text() -> str:
    """Two pods: a sender that idles (the bench runs the flood in its netns) and a
    receiver whose bound UDP socket is never read (the stack accepts the packets, the
    full socket drops them after the datapath saw them)."""
    sink = json.dumps([PY, "-c", RECEIVER_CODE])
    return (f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NAMESPACE}}}\n---\n"
            f"apiVersion: v1\nkind: Pod\nmetadata: {{name: sender, namespace: {NAMESPACE}, "
            "labels: {app: sender}}\n"
            "spec: {containers: [{name: idle, command: [sleep, infinity]}]}\n---\n"
            f"apiVersion: v1\nkind: Pod\nmetadata: {{name: receiver, namespace: {NAMESPACE}, "
            "labels: {app: receiver}}\n"
            f"spec: {{containers: [{{name: sink, command: {sink}}}]}}\n")


# -- names, and what must be gone at the end ------------------------------------------------

@dataclass
class Names:
    """Every name this run may create; cleanup and the leftover check use only these."""

    prefix: str
    state_dir: str
    pod_cidr: str
    tmp: Path

    @property
    def agent_pin_dir(self) -> str:
        return f"/sys/fs/bpf/spyglass-{self.prefix}-agent"

    @property
    def bcc_pin_dir(self) -> str:
        return f"/sys/fs/bpf/spyglass-{self.prefix}-bcc"

    def netns(self, pod: str) -> str:
        return f"{self.prefix}-{NAMESPACE}-{pod}"


@dataclass
class Seen:
    """What this run made, as it made it (names and PIDs), for the final check."""

    links: set[str] = field(default_factory=set)
    pids: set[int] = field(default_factory=set)

    def note_lab(self, state_dir: str) -> None:
        from spyglass.lab.state import load_state, pods_from_state

        state = load_state(state_dir)
        for pod in pods_from_state(state or {}):
            self.links.add(pod.host_ifname)
            self.pids.update(p.pid for p in pod.processes)


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def leftovers(names: Names, seen: Seen) -> list[str]:
    found: list[str] = []
    netns = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    found += [f"netns {n}" for n in netns if n.startswith(f"{names.prefix}-{NAMESPACE}-")]
    found += [f"link {n}" for n in sorted(seen.links) if os.path.exists(f"/sys/class/net/{n}")]
    found += [f"pins {d}" for d in (names.agent_pin_dir, names.bcc_pin_dir) if os.path.exists(d)]
    found += [f"process {p}" for p in sorted(seen.pids) if running(p)]
    if os.path.exists(os.path.join(names.state_dir, "lab.json")):
        found.append(f"lab state {names.state_dir}/lab.json")
    return found


def spyglass_down(names: Names, pin_dir: str) -> list[str]:
    """`spyglass down` for our state dir and pin dir: it removes what the records name
    (agent, ring keeper, pods, our tc filters on `<prefix>*` links, our pins)."""
    done = subprocess.run([SPYGLASS, "down", "--state-dir", names.state_dir, "--pin-dir", pin_dir,
                           "--link-prefix", names.prefix], capture_output=True, text=True,
                          timeout=120, check=False)
    return [line for line in done.stdout.splitlines() if line.strip()]


# -- measurements common to the readers -----------------------------------------------------

def cpu_seconds(pid: int | str) -> float:
    """utime + stime of one process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_cpu_seconds() -> float:
    """Non-idle CPU time of the whole machine (softirq, where the datapath runs, included)."""
    with open("/proc/stat") as fh:
        values = [int(x) for x in fh.readline().split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Counters:
    """Cumulative counters of one reader at one instant."""

    ok: int  # sg_submit_ok, all CPUs
    failed: int  # sg_submit_fail, all CPUs
    delivered: int  # to the flow ring (Spyglass) / to the callback (bcc)
    stored: int | None  # written by the store writer; None without a store
    queued: int  # rows the store writer holds
    lost: dict[str, int]  # the ledger by source
    refused: int  # decoder refusals and malformed perf records
    cpu_s: float  # the reader's process
    busy_s: float  # the machine
    lost_cb: int = 0  # bcc's lost callback (PERF_RECORD_LOST), for comparison


@dataclass(frozen=True)
class SendResult:
    sent: int
    probes: int
    split: int  # datagrams from SPLIT_SPORT (0 unless --clients)
    errors: int
    first_error: str
    elapsed_s: float
    cpu_s: float

    @property
    def pps(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class Row:
    """One rung: the deltas of the counters over it."""

    reader: str
    target: int  # packets/s asked for; 0 = as fast as possible
    send: SendResult
    offered: int
    failed: int
    delivered: int
    stored: int | None
    lost: dict[str, int]
    refused: int
    cpu_s: float
    busy_s: float
    latency_ms: list[float]
    lost_cb: int
    refined: bool = False
    clients: list[ClientResult] = field(default_factory=list)

    @property
    def collector_lost(self) -> int:
        """Events lost by the collector itself: before the ring, to the store, refused."""
        return self.ring_lost + self.store_lost + self.refused

    @property
    def ring_lost(self) -> int:
        return sum(self.lost.get(s, 0) for s in RING_STAGE)

    @property
    def store_lost(self) -> int:
        return sum(self.lost.get(s, 0) for s in STORE_STAGE)

    @property
    def balanced(self) -> bool:
        return self.offered == self.delivered + self.ring_lost + self.refused

    @property
    def store_balanced(self) -> bool | None:
        if self.stored is None:
            return None
        return self.delivered == self.stored + self.store_lost

    @property
    def zero_loss(self) -> bool:
        return self.ring_lost == 0 and self.store_lost == 0 and self.refused == 0

    def pct(self, q: float) -> float:
        if not self.latency_ms:
            return float("nan")
        xs = sorted(self.latency_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))]


def delta(before: Counters, after: Counters, reader: str, target: int, send: SendResult,
          latency_ms: list[float]) -> Row:
    sources = set(before.lost) | set(after.lost)
    lost = {s: after.lost.get(s, 0) - before.lost.get(s, 0) for s in sorted(sources)}
    stored = (after.stored - before.stored
              if after.stored is not None and before.stored is not None else None)
    return Row(reader, target, send,
               offered=(after.ok + after.failed) - (before.ok + before.failed),
               failed=after.failed - before.failed,
               delivered=after.delivered - before.delivered, stored=stored,
               lost={s: n for s, n in lost.items() if n}, refused=after.refused - before.refused,
               cpu_s=after.cpu_s - before.cpu_s, busy_s=after.busy_s - before.busy_s,
               latency_ms=latency_ms, lost_cb=after.lost_cb - before.lost_cb)


class Reader(Protocol):
    """One configuration under test: the lab, the datapath and a reader of its events."""

    name: str
    sender_ns: str
    receiver_ip: str
    links: list[str]

    def counters(self) -> Counters: ...

    def start_probe(self) -> None: ...

    def stop_probe(self) -> list[float]: ...

    def pump(self, seconds: float) -> None:
        """Let the reader work for `seconds` (bcc: poll; the agent runs by itself)."""

    def while_sending(self, proc: subprocess.Popen[str]) -> None: ...


class Sender:
    """The compiled flood_sender, run in the sender pod's netns by `ip netns exec`."""

    def __init__(self, binary: str, seen: Seen) -> None:
        self.binary = binary
        self.seen = seen
        self.proc: subprocess.Popen[str] | None = None

    def start(self, netns: str, dst: str, rate: int, seconds: float,
              split: bool = False) -> subprocess.Popen[str]:
        argv = ["ip", "netns", "exec", netns, self.binary, dst, str(DST_PORT), str(rate),
                f"{seconds:g}", str(PAYLOAD), str(SPORT), str(PROBE_SPORT), f"{PROBE_MS:g}"]
        env = dict(os.environ)
        if split:
            env.update(FLOOD_SPLIT_SPORT=str(SPLIT_SPORT), FLOOD_SPLIT_EVERY=str(SPLIT_EVERY))
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.seen.pids.add(self.proc.pid)
        return self.proc

    def finish(self, seconds: float) -> SendResult:
        proc = self.proc
        assert proc is not None
        try:
            out, err = proc.communicate(timeout=seconds + 30)
        finally:
            self.stop()
        if proc.returncode != 0:
            raise BenchError(f"flood_sender failed ({proc.returncode}): {err.strip()}")
        raw = json.loads(out.strip().splitlines()[-1])
        return SendResult(int(raw["sent"]), int(raw["probes"]), int(raw.get("split", 0)),
                          int(raw["errors"]),
                          str(raw["first_error"]), float(raw["elapsed_s"]),
                          float(raw["user_s"]) + float(raw["sys_s"]))

    def stop(self) -> None:
        """Kill our sender by its PID if it still runs."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()


def compile_sender(workdir: str) -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise BenchError("no C compiler: apt-get install gcc (the bench compiles "
                         "bench/flood_sender.c at run time)")
    out = os.path.join(workdir, "flood_sender")
    done = subprocess.run([cc, "-O2", "-Wall", "-o", out, str(SENDER_SOURCE)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"compiling {SENDER_SOURCE} failed:\n{done.stderr}")
    return out


def settle(reader: Reader, before: Counters, timeout_s: float = 30.0) -> Counters:
    """Wait until the reader has taken all that was offered: the accounting balances and
    the store holds nothing unwritten, or nothing changed for 2 s (then the row shows
    the difference), or `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: tuple[int, ...] | None = None
    stable_since = time.monotonic()
    while True:
        reader.pump(0.2)
        now = reader.counters()
        lost = sum(now.lost.get(s, 0) - before.lost.get(s, 0) for s in RING_STAGE)
        offered = now.ok + now.failed - before.ok - before.failed
        delivered = now.delivered - before.delivered
        refused = now.refused - before.refused
        balanced = offered == delivered + lost + refused
        key = (now.ok, now.failed, now.delivered, now.stored or 0, now.queued, lost)
        if key != last:
            last, stable_since = key, time.monotonic()
        # The collector reads the failure counters every 0.5 s: give it one more look.
        if balanced and now.queued == 0 and time.monotonic() - stable_since >= 0.6:
            return now
        if time.monotonic() - stable_since >= 2.0 or time.monotonic() > deadline:
            return now


def forwarding_off(links: Sequence[str]) -> list[str]:
    """Our host veths whose IPv4 forwarding is off. The lab turns it on per device, but any
    write of the global net.ipv4.ip_forward (another job's testbed restoring it to 0, say)
    sets every device's flag, ours too: then packets stop at the sender's veth."""
    off = []
    for link in links:
        with contextlib.suppress(FileNotFoundError):
            if Path(f"/proc/sys/net/ipv4/conf/{link}/forwarding").read_text().strip() != "1":
                off.append(link)
    return off


def run_rung(reader: Reader, sender: Sender, rate: int, seconds: float,
             refined: bool = False) -> Row:
    """One rung; run again (twice at most) if forwarding was switched off under it."""
    for _ in range(3):
        off = forwarding_off(reader.links)
        if off:
            print(f"   warning: IPv4 forwarding is off on {', '.join(off)} (someone wrote "
                  "net.ipv4.ip_forward); switching it back on for our links", file=sys.stderr)
            for link in off:
                Path(f"/proc/sys/net/ipv4/conf/{link}/forwarding").write_text("1")
        row = _rung(reader, sender, rate, seconds, refined)
        if not forwarding_off(reader.links):
            return row
        print(f"   warning: forwarding was switched off during the {rate_label(rate)} rung; "
              "running it again", file=sys.stderr)
    raise BenchError("IPv4 forwarding on the lab's veths keeps being switched off by another "
                     "process: run the bench when nothing else toggles net.ipv4.ip_forward")


def _rung(reader: Reader, sender: Sender, rate: int, seconds: float, refined: bool) -> Row:
    live = isinstance(reader, AgentReader) and reader.clients
    clients: list[ObserveClient] = []
    try:
        if live:
            assert isinstance(reader, AgentReader)
            clients = reader.start_clients()
        reader.pump(0.3)
        before = reader.counters()
        reader.start_probe()
        try:
            proc = sender.start(reader.sender_ns, reader.receiver_ip, rate, seconds, split=live)
            reader.while_sending(proc)
            result = sender.finish(seconds)
            after = settle(reader, before)
        finally:
            latency = reader.stop_probe()
        for c in clients:
            c.wait_quiet()
    finally:
        results = [c.stop() for c in clients]
    row = delta(before, after, reader.name, rate, result, latency)
    row.refined = refined
    row.clients = results
    return row


# -- Spyglass: `spyglass up` and its API ----------------------------------------------------

class PinnedCounters:
    """The datapath's sg_submit_ok / sg_submit_fail, read from their pins (the agent's
    status tells failures, not successes)."""

    def __init__(self, pin_dir: str) -> None:
        from bcc.libbcc import lib

        get = lib.bpf_obj_get
        get.argtypes, get.restype = [ct.c_char_p], ct.c_int
        self.fds: dict[str, int] = {}
        for name in ("sg_submit_ok", "sg_submit_fail"):
            fd = int(get(os.path.join(pin_dir, name).encode()))
            if fd < 0:
                self.close()
                raise BenchError(f"cannot open {pin_dir}/{name} ({os.strerror(-fd)})")
            self.fds[name] = fd

    def read(self) -> tuple[int, int]:
        from spyglass.bpf.pins import read_percpu_u64

        ok = sum(v[0] for v in read_percpu_u64(self.fds["sg_submit_ok"]))
        failed = sum(v[0] for v in read_percpu_u64(self.fds["sg_submit_fail"]))
        return ok, failed

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


class LatencyClient:
    """A WebSocket follower of the probe flows: (receive wall time - flow time) each."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[float] = []
        self.lost_told = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.failed = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="latency-client", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from websockets.sync.client import connect

        from spyglass.model.flow import parse_time_ns

        try:
            with connect(self.url, open_timeout=10, max_size=None) as ws:
                while not self._stop.is_set():
                    try:
                        text = ws.recv(timeout=0.2)
                    except TimeoutError:
                        continue
                    now = time.time_ns()
                    msg = json.loads(text)
                    if "flow" in msg:
                        self.samples.append((now - parse_time_ns(msg["flow"]["time"])) / 1e6)
                    elif "lost_events" in msg:
                        self.lost_told += int(msg["lost_events"].get("num_events_lost", 0))
        except BaseException as exc:  # reported by the reader; never silently
            self.error = exc
            self.failed = True

    def stop(self) -> list[float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        return self.samples


@dataclass
class ClientResult:
    """What one `spyglass observe -f` client printed over a rung."""

    name: str  # "A" (--from-port SPLIT_SPORT) or "B" (no filter)
    flows: int
    told_lost: dict[str, int]  # lost_events lines, by source
    exit_code: int | None
    stderr: str

    @property
    def client_lost(self) -> int:
        return sum(self.told_lost.get(s, 0) for s in CLIENT_STAGE)

    @property
    def all_lost(self) -> int:
        return sum(self.told_lost.values())


class ObserveClient:
    """The real CLI, `spyglass observe -f -o json [filter]`, its stdout counted by a thread."""

    def __init__(self, name: str, url: str, filters: Sequence[str], seen: Seen,
                 tmp: Path) -> None:
        self._start(name, [SPYGLASS, "observe", "-f", "--server", url, "-o", "json",
                           "--with-spyglass-fields", *filters], seen, tmp / f"observe-{name}.err")

    def _start(self, name: str, argv: list[str], seen: Seen, err_path: Path) -> None:
        """Run `argv`, its stdout read line by line by a thread into `_take`."""
        self.name = name
        self.flows = 0
        self.told_lost: dict[str, int] = {}
        self.changed = time.monotonic()
        self.err = err_path
        with self.err.open("wb") as err:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True,
                                         bufsize=1 << 16)
        seen.pids.add(self.proc.pid)
        self._thread = threading.Thread(target=self._read, name=f"client-{name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            self._take(msg)
            self.changed = time.monotonic()

    def _take(self, msg: dict[str, Any]) -> None:
        """One line of `observe -o json`: a flow or a loss record."""
        if "flow" in msg:
            self.flows += 1
        elif "lost_events" in msg:
            ev = msg["lost_events"]
            source = str(ev.get("source", "?"))
            self.told_lost[source] = (self.told_lost.get(source, 0)
                                      + int(ev.get("num_events_lost", 0)))

    def wait_quiet(self, quiet_s: float = 1.5, timeout_s: float = 120.0) -> None:
        """Until nothing new was printed for `quiet_s` (the client drained its queue)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            if time.monotonic() - self.changed >= quiet_s:
                return
            time.sleep(0.1)

    def stop(self) -> ClientResult:
        """SIGINT to our client by its PID (a follow's normal end), then read what is left."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._thread.join(timeout=15)
        err = self.err.read_text(errors="replace").strip() if self.err.exists() else ""
        return ClientResult(self.name, self.flows, dict(self.told_lost), self.proc.returncode,
                            err[-500:])


class GrpcObserveClient(ObserveClient):
    """bench/grpc_client.py: Hubble's GetFlows with follow (as `hubble observe -f` asks),
    its running counts read from the JSON lines it prints every half second."""

    def __init__(self, name: str, target: str, source_ports: Sequence[str], seen: Seen,
                 tmp: Path) -> None:
        self._start(name, [sys.executable, str(HERE / "grpc_client.py"), target,
                           *(a for p in source_ports for a in ("--source-port", p))],
                    seen, tmp / f"grpc-{name}.err")

    def _take(self, msg: dict[str, Any]) -> None:
        """A running total: {"flows": n, "lost": {source: n}}."""
        if "flows" in msg:
            self.flows = int(msg["flows"])
            self.told_lost = {str(k): int(v) for k, v in msg["lost"].items()}


class AgentReader:
    """`spyglass up` on the bench manifest, with private names; read through its API."""

    def __init__(self, names: Names, seen: Seen, store: bool, manifest: Path) -> None:
        self.names, self.seen, self.store = names, seen, store
        self.name = "spyglass, store chDB" if store else "spyglass, --store none"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = names.tmp / f"up-{'chdb' if store else 'none'}.log"
        self.manifest = manifest
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=10)
        self.pins: PinnedCounters | None = None
        self.agent_pid = 0
        self.sender_ns = names.netns("sender")
        self.receiver_ip = ""
        self.links: list[str] = []
        self.probe: LatencyClient | None = None
        self.probe_errors: list[str] = []
        self.latency = True  # follow the probes with a WebSocket client
        self.clients = False  # run the two `spyglass observe -f` clients in each rung
        self.client_api = "ws"  # ... over the WebSocket (the CLI), or grpc (GetFlows)
        self.grpc = f"127.0.0.1:{free_port()}"
        self.ready_s = 0.0

    def start(self) -> None:
        store = f"chdb://{self.names.tmp / 'store'}" if self.store else "none"
        argv = [SPYGLASS, "up", "--manifest", str(self.manifest),
                "--listen", f"127.0.0.1:{self.port}", "--monitor-aggregation", "none",
                "--state-dir", self.names.state_dir, "--pin-dir", self.names.agent_pin_dir,
                "--prefix", self.names.prefix, "--link-prefix", self.names.prefix,
                "--pod-cidr", self.names.pod_cidr, "--node-name", "bench", "--store", store,
                "--grpc-listen", self.grpc,
                "--grpc-socket", os.path.join(self.names.state_dir, "hubble.sock")]
        t0 = time.monotonic()
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.seen.pids.add(self.proc.pid)
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"spyglass up exited with {self.proc.returncode}:\n"
                                 f"{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get("/api/v1/status").status_code == 200:
                    break
            if time.monotonic() - t0 > 120:
                raise BenchError(f"spyglass up did not serve within 120 s:\n"
                                 f"{self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        self.ready_s = time.monotonic() - t0
        self.seen.note_lab(self.names.state_dir)
        from spyglass.agent.records import read_agent

        record = read_agent(self.names.state_dir)
        self.agent_pid = record.pid if record is not None else self.proc.pid
        if record is not None and record.keeper_pid:
            self.seen.pids.add(record.keeper_pid)
        self.seen.pids.add(self.agent_pid)
        self.receiver_ip = lab_pod_ip(self.names.state_dir, "receiver")
        self.links = lab_links(self.names.state_dir)
        wait_bound(self.names.netns("receiver"))
        self.pins = PinnedCounters(self.names.agent_pin_dir)

    def status(self) -> dict[str, Any]:
        r = self.http.get("/api/v1/status")
        if r.status_code != 200:
            raise BenchError(f"status answered {r.status_code}: {r.text[:300]}")
        body: dict[str, Any] = r.json()
        return body

    def counters(self) -> Counters:
        assert self.pins is not None
        ok, failed = self.pins.read()
        st = self.status()
        store = st.get("store") or {}
        coll = st.get("collector") or {}
        refused = sum(int(v) for v in (coll.get("decode_errors") or {}).values())
        refused += int(coll.get("perf_malformed") or 0)
        written = store.get("written")
        return Counters(ok, failed, int(st["seen_flows"]),
                        int(written) if self.store and written is not None else None,
                        int(store.get("queued_rows") or 0),
                        {str(k): int(v) for k, v in (st.get("lost_events") or {}).items()},
                        refused, cpu_seconds(self.agent_pid), busy_cpu_seconds())

    def start_probe(self) -> None:
        if not self.latency:
            return
        clients = int(self.status().get("connected_clients", 0))
        ws = self.url.replace("http://", "ws://")
        self.probe = LatencyClient(f"{ws}/api/v1/flows/stream?from-port={PROBE_SPORT}")
        self.probe.start()
        deadline = time.monotonic() + 10
        while int(self.status().get("connected_clients", 0)) <= clients:
            if self.probe.failed or time.monotonic() > deadline:
                # The rung still counts; its latency is "-" and the reason is told once.
                why = repr(self.probe.error) if self.probe.error else "no stream after 10 s"
                if why not in self.probe_errors:
                    self.probe_errors.append(why)
                    print(f"   warning: the latency client failed ({why}); rows go on "
                          f"without latency. The agent's log:\n{self.log_tail()}",
                          file=sys.stderr)
                self.stop_probe()
                return
            time.sleep(0.05)

    def start_clients(self) -> list[ObserveClient]:
        """Clients A (from the split port: 1% of the flood) and B (no filter), connected
        and then 1 s idle before the rung's traffic."""
        n0 = int(self.status().get("connected_clients", 0))
        tmp = self.names.tmp
        clients: list[ObserveClient]
        if self.client_api == "grpc":
            clients = [GrpcObserveClient("A", self.grpc, [str(SPLIT_SPORT)], self.seen, tmp),
                       GrpcObserveClient("B", self.grpc, [], self.seen, tmp)]
        else:
            clients = [ObserveClient("A", self.url, ["--from-port", str(SPLIT_SPORT)],
                                     self.seen, tmp),
                       ObserveClient("B", self.url, [], self.seen, tmp)]
        deadline = time.monotonic() + 20
        while int(self.status().get("connected_clients", 0)) < n0 + 2:
            dead = [c for c in clients if c.proc.poll() is not None]
            if dead or time.monotonic() > deadline:
                results = [c.stop() for c in clients]
                raise BenchError("the observe clients did not connect: "
                                 + "; ".join(f"{r.name}: exit {r.exit_code} {r.stderr}"
                                             for r in results))
            time.sleep(0.05)
        time.sleep(1.0)
        return clients

    def log_tail(self, chars: int = 2500) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text[-chars:]

    def stop_probe(self) -> list[float]:
        probe, self.probe = self.probe, None
        return probe.stop() if probe is not None else []

    def pump(self, seconds: float) -> None:
        time.sleep(seconds)

    def while_sending(self, proc: subprocess.Popen[str]) -> None:
        proc.wait()

    def close(self) -> list[str]:
        """Ctrl-C to `spyglass up` (it tears its lab and datapath down), then `spyglass
        down` for our names as a safety net."""
        done: list[str] = []
        self.stop_probe()
        if self.pins is not None:
            self.pins.close()
            self.pins = None
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                done.append(f"killed spyglass up (pid {proc.pid})")
        done += spyglass_down(self.names, self.names.agent_pin_dir)
        self.http.close()
        return done


# -- the baseline: the same datapath, read by bcc's defaults ---------------------------------

class BccReader:
    """`spyglass lab up`, then the datapath loaded here as the agent loads it, its perf
    event array read by bcc's `open_perf_buffer` with a Python callback per event."""

    def __init__(self, names: Names, seen: Seen, manifest: Path, pages: int) -> None:
        self.names, self.seen, self.manifest, self.pages = names, seen, manifest, pages
        self.name = ("bcc defaults" if pages == BCC_DEFAULT_PAGES
                     else f"bcc, {pages} pages")
        self.sender_ns = names.netns("sender")
        self.receiver_ip = ""
        self.links: list[str] = []
        self.dp: Any = None
        self.delivered = 0
        self.lost_cb = 0
        self.bad = 0
        self._probing = False
        self.latency = True  # time the probes in the callback
        self.samples: list[float] = []
        self.lab_up = False

    def start(self) -> None:
        from spyglass.bpf.datapath import Datapath, DatapathEndpoint
        from spyglass.collector.abi import EVENT_VERSION, SgEvent
        from spyglass.lab.lab import Lab

        done = subprocess.run(
            [SPYGLASS, "lab", "up", "--manifest", str(self.manifest), "--state-dir",
             self.names.state_dir, "--prefix", self.names.prefix, "--link-prefix",
             self.names.prefix, "--pod-cidr", self.names.pod_cidr],
            capture_output=True, text=True, timeout=120, check=False)
        self.lab_up = True
        self.seen.note_lab(self.names.state_dir)
        if done.returncode != 0:
            raise BenchError(f"spyglass lab up failed ({done.returncode}):\n"
                             f"{done.stdout}{done.stderr}")
        lab = Lab.load(self.names.state_dir)
        self.dp = Datapath(pin_dir=self.names.bcc_pin_dir, aggregation="none",
                           service_cidr=lab.service_cidr)
        self.dp.sync_endpoints([DatapathEndpoint(ifindex=p.host_ifindex, ifname=p.host_ifname,
                                                 ep_id=p.ep_id, identity=p.identity, ipv4=p.ip)
                                for p in lab.pods if p.host_ifindex])
        self.dp.load_services(lab.service_entries())
        for pod in lab.pods:
            if pod.host_ifindex:
                self.dp.attach(pod.host_ifindex)

        pointer = ct.POINTER(SgEvent)

        def on_event(cpu: int, data: Any, size: int) -> None:
            ev = ct.cast(data, pointer).contents
            if ev.version != EVENT_VERSION:
                self.bad += 1
                return
            self.delivered += 1
            if self._probing and ev.sport == PROBE_SPORT:
                self.samples.append((time.monotonic_ns() - ev.ts_ns) / 1e6)

        def on_lost(lost: int) -> None:
            self.lost_cb += lost

        self.dp.bpf["sg_events"].open_perf_buffer(on_event, page_cnt=self.pages,
                                                  lost_cb=on_lost)
        self.receiver_ip = lab_pod_ip(self.names.state_dir, "receiver")
        self.links = lab_links(self.names.state_dir)
        wait_bound(self.names.netns("receiver"))

    def counters(self) -> Counters:
        ok, failed = sum(self.dp.submitted()), sum(self.dp.submit_failures())
        # Failed submits are the exact loss (bcc's lost callback lags and under-reports).
        return Counters(ok, failed, self.delivered, None, 0,
                        {"PERF_EVENT_RING_BUFFER": failed}, self.bad, cpu_seconds("self"),
                        busy_cpu_seconds(), lost_cb=self.lost_cb)

    def start_probe(self) -> None:
        self.samples = []
        self._probing = self.latency

    def stop_probe(self) -> list[float]:
        self._probing = False
        return self.samples

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.dp.bpf.perf_buffer_poll(timeout=50)

    def while_sending(self, proc: subprocess.Popen[str]) -> None:
        while proc.poll() is None:
            self.dp.bpf.perf_buffer_poll(timeout=50)

    def close(self) -> list[str]:
        done: list[str] = []
        if self.dp is not None:
            try:
                self.dp.close()  # detach, unpin, free the perf buffers
                done.append(f"closed the baseline datapath ({self.names.bcc_pin_dir})")
            finally:
                self.dp = None
        if self.lab_up:
            lab = subprocess.run([SPYGLASS, "lab", "down", "--state-dir", self.names.state_dir],
                                 capture_output=True, text=True, timeout=120, check=False)
            done += [line for line in lab.stdout.splitlines() if line.strip()]
        done += spyglass_down(self.names, self.names.bcc_pin_dir)
        return done


# -- helpers ------------------------------------------------------------------------------

def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lab_pod_ip(state_dir: str, pod: str) -> str:
    from spyglass.lab.state import load_state, pods_from_state

    for p in pods_from_state(load_state(state_dir) or {}):
        if p.namespace == NAMESPACE and p.name == pod:
            return p.ip
    raise BenchError(f"the lab in {state_dir} has no pod {NAMESPACE}/{pod}")


def lab_links(state_dir: str) -> list[str]:
    from spyglass.lab.state import load_state, pods_from_state

    return [p.host_ifname for p in pods_from_state(load_state(state_dir) or {})]


def wait_bound(netns: str, timeout_s: float = 15.0) -> None:
    """Until the receiver's socket is bound (its python may still be starting)."""
    want = f":{DST_PORT:04X} "
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = subprocess.run(["ip", "netns", "exec", netns, "cat", "/proc/net/udp"],
                             capture_output=True, text=True, check=False).stdout
        if any(want in line.split(None, 2)[1] + " " for line in out.splitlines()[1:]
               if len(line.split()) > 2):
            return
        time.sleep(0.1)
    raise BenchError(f"nothing listens on UDP {DST_PORT} in {netns}")


def parse_rates(text: str) -> list[int]:
    rates: list[int] = []
    for part in text.split(","):
        p = part.strip().lower()
        if p in ("max", "0"):
            rates.append(0)
        elif p.endswith("k") and p[:-1].isdigit():
            rates.append(int(p[:-1]) * 1000)
        elif p.isdigit():
            rates.append(int(p))
        else:
            raise argparse.ArgumentTypeError(f"{part!r}: a rate is packets/s (10000, 10k) or max")
    return rates


def rate_label(rate: int) -> str:
    if rate == 0:
        return "max"
    if rate % 1000 == 0:
        return f"{rate // 1000}k"
    return f"{rate / 1000:.0f}k" if rate >= 10_000 else str(rate)


def k(n: float) -> str:
    if abs(n) >= 1e6:
        return f"{n / 1e6:.2f}M"
    if abs(n) >= 1e4:
        return f"{n / 1e3:.0f}k"
    if abs(n) >= 1e3:
        return f"{n / 1e3:.1f}k"
    return f"{n:.0f}"


# -- the run ------------------------------------------------------------------------------

HEADER = ("rate", "sent pkt/s", "ev/pkt", "offered", "delivered", "stored", "lost (by source)",
          "reader CPU-s", "events/CPU-s", "sender CPU-s", "latency p50/p99 ms", "accounting")


def row_cells(r: Row) -> tuple[str, ...]:
    lost = ", ".join(f"{s}={n:,}" for s, n in r.lost.items()) or "0"
    if r.lost_cb:
        lost += f" (bcc lost_cb {r.lost_cb:,})"
    if r.refused:
        lost += f", refused={r.refused:,}"
    ev_pkt = r.offered / r.send.sent if r.send.sent else float("nan")
    per_cpu = r.delivered / r.cpu_s if r.cpu_s > 0 else float("nan")
    acct = "ok" if r.balanced else f"MISMATCH by {r.offered - r.delivered - r.ring_lost:+,}"
    if r.store_balanced is False:
        acct += f"; store off by {r.delivered - (r.stored or 0) - r.store_lost:+,}"
    lat = (f"{r.pct(0.5):.2f} / {r.pct(0.99):.2f} (n={len(r.latency_ms)})"
           if r.latency_ms else "-")
    label = ("~" if r.refined else "") + rate_label(r.target)
    return (label, k(r.send.pps), f"{ev_pkt:.2f}", f"{r.offered:,}", f"{r.delivered:,}",
            "-" if r.stored is None else f"{r.stored:,}", lost, f"{r.cpu_s:.2f}", k(per_cpu),
            f"{r.send.cpu_s:.2f}", lat, acct)


def print_table(title: str, rows: Sequence[Row], latency_name: str) -> None:
    cells = [HEADER] + [row_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    print(f"\n{title}  (latency: {latency_name})")
    for i, line in enumerate(cells):
        print("  " + "  ".join(c.rjust(w) if j not in (6, 11) else c.ljust(w)
                               for j, (c, w) in enumerate(zip(line, widths, strict=True))))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))


CLIENT_HEADER = ("rate", "sent pkt/s", "A recv / expected", "A told lost", "A",
                 "B recv", "B told lost (by source)", "B recv+lost / delivered", "B",
                 "collector lost")


def lost_text(lost: dict[str, int]) -> str:
    return ", ".join(f"{s}={n:,}" for s, n in sorted(lost.items()) if n) or "0"


def client_cells(r: Row) -> tuple[str, ...]:
    a = next((c for c in r.clients if c.name == "A"), None)
    b = next((c for c in r.clients if c.name == "B"), None)
    cells = [("~" if r.refined else "") + rate_label(r.target), k(r.send.pps)]
    if a is not None:
        want = 2 * r.send.split
        ok = a.flows == want and a.all_lost == 0
        cells += [f"{a.flows:,} / {want:,}", lost_text(a.told_lost),
                  "keeps up" if ok else f"off by {a.flows - want:+,}"]
    else:
        cells += ["-", "-", "-"]
    if b is not None:
        told = b.flows + b.client_lost
        ok = told == r.delivered
        cells += [f"{b.flows:,}", lost_text(b.told_lost), f"{told:,} / {r.delivered:,}",
                  ("keeps up" if b.client_lost == 0 else "told exactly") if ok
                  else f"off by {told - r.delivered:+,}"]
    else:
        cells += ["-", "-", "-", "-"]
    cells.append(f"{r.collector_lost:,}" + ("" if r.collector_lost == 0
                                            else f" ({lost_text(r.lost)})"))
    return tuple(cells)


def print_clients(rows: Sequence[Row], api: str = "ws") -> None:
    cells = [CLIENT_HEADER] + [client_cells(r) for r in rows if r.clients]
    widths = [max(len(c[i]) for c in cells) for i in range(len(CLIENT_HEADER))]
    how = "Hubble gRPC GetFlows follow" if api == "grpc" else "observe -f"
    print(f"  live clients: A = {how} from port {SPLIT_SPORT} (1 in {SPLIT_EVERY} "
          f"datagrams; expected 2 events each), B = {how}, no filter")
    for i, line in enumerate(cells):
        print("    " + "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))
        if i == 0:
            print("    " + "  ".join("-" * w for w in widths))
    for r in rows:
        for c in r.clients:
            if c.exit_code not in (0, None) or c.stderr:
                print(f"    client {c.name} at {rate_label(r.target)}: exit {c.exit_code}; "
                      f"{c.stderr}")


def kpps(pps: float) -> str:
    return f"{pps / 1000:.1f}k"


def zero_loss_rate(rows: Sequence[Row]) -> tuple[float | None, str]:
    """The achieved packets/s of the fastest zero-loss rung, and how it was bounded."""
    good = [r for r in rows if r.zero_loss]
    bad = [r for r in rows if not r.zero_loss]
    if not good:
        low = min(rows, key=lambda r: r.send.pps)
        return None, f"< {kpps(low.send.pps)} pkt/s (every rung lost events)"
    best = max(good, key=lambda r: r.send.pps)
    above = [r for r in bad if r.send.pps > best.send.pps]
    if not above:
        return best.send.pps, f"{kpps(best.send.pps)} pkt/s (no rung lost: the ladder's top)"
    first_bad = min(above, key=lambda r: r.send.pps)
    return best.send.pps, (f"{kpps(best.send.pps)} pkt/s (lossy from {kpps(first_bad.send.pps)} "
                           "pkt/s)")


def refine(reader: Reader, sender: Sender, rows: list[Row], steps: int,
           seconds: float) -> None:
    """Bisect between the fastest zero-loss rung and the slowest lossy one above it."""
    for _ in range(steps):
        good = [r.send.pps for r in rows if r.zero_loss]
        lo = max(good) if good else 0.0
        bad = [r.send.pps for r in rows if not r.zero_loss and r.send.pps > lo]
        if not bad:
            return
        hi = min(bad)
        if hi - lo < max(1000.0, 0.03 * hi):
            return
        mid = int((lo + hi) / 2)
        row = run_rung(reader, sender, mid, seconds, refined=True)
        rows.append(row)
        print("    " + "  ".join(row_cells(row)), flush=True)


def run_reader(reader: AgentReader | BccReader, sender: Sender, rates: Sequence[int],
               seconds: float, refine_steps: int) -> list[Row]:
    with open("/proc/loadavg") as fh:
        load = " ".join(fh.read().split()[:3])
    print(f"\n== {reader.name}: starting (load average {load})", flush=True)
    reader.start()
    if isinstance(reader, AgentReader):
        print(f"   spyglass up served in {reader.ready_s:.1f}s; agent pid {reader.agent_pid}",
              flush=True)
    live = isinstance(reader, AgentReader) and reader.clients
    if isinstance(reader, AgentReader):
        reader.clients = False
    warm = run_rung(reader, sender, 1000, 1.0)
    if isinstance(reader, AgentReader):
        reader.clients = live
    print(f"   warm-up, 1k pkt/s for 1 s: {warm.send.sent:,} packets, {warm.offered:,} events "
          f"offered ({warm.offered / max(1, warm.send.sent):.2f} per packet), "
          f"{warm.delivered:,} delivered", flush=True)
    rows: list[Row] = []
    for rate in rates:
        row = run_rung(reader, sender, rate, seconds)
        rows.append(row)
        print("    " + "  ".join(row_cells(row)), flush=True)
    if refine_steps:
        refine(reader, sender, rows, refine_steps, seconds)
    return sorted(rows, key=lambda r: (r.target == 0, r.send.pps))


def environment() -> str:
    import platform

    import bcc

    with open("/proc/loadavg") as fh:
        load = " ".join(fh.read().split()[:3])
    import spyglass.collector.ring as ring

    code = Path(os.path.realpath(ring.__file__)).parent.parent
    return (f"kernel {os.uname().release}, {os.cpu_count()} CPUs, load average {load}, "
            f"python {platform.python_version()}, bcc {getattr(bcc, '__version__', '?')}, "
            f"{time.strftime('%Y-%m-%d %H:%M')}; spyglass code from {code}")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGINT too, explicitly: a shell's background job starts with SIGINT ignored.
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, handler),
                signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Cleanup runs to its end: Ctrl-C and SIGTERM are ignored meanwhile."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT,
                                                                     signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def preflight(names: Names) -> None:
    if os.geteuid() != 0:
        raise BenchError("run as root: the bench makes netns, veths and eBPF programs")
    netns = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    taken = [n for n in netns if n.startswith(f"{names.prefix}-")]
    if taken:
        raise BenchError(f"netns {', '.join(taken)} already exist: another run with prefix "
                         f"{names.prefix} is active or crashed (pass another --prefix, or "
                         "--cleanup)")
    for d in (names.agent_pin_dir, names.bcc_pin_dir):
        if os.path.exists(d):
            raise BenchError(f"{d} exists: a run crashed? `--cleanup` removes it")
    if os.path.exists(os.path.join(names.state_dir, "lab.json")):
        raise BenchError(f"a lab is up in {names.state_dir}: `--cleanup` removes it")


def valid_reader(text: str) -> bool:
    if text in ("chdb", "none", "bcc"):
        return True
    head, _, pages = text.partition(":")
    return (head == "bcc" and pages.isdigit() and int(pages) > 0
            and int(pages) & (int(pages) - 1) == 0)


def bcc_pages(text: str) -> int:
    _, _, pages = text.partition(":")
    return int(pages) if pages else BCC_DEFAULT_PAGES


def cleanup(names: Names) -> list[str]:
    """After a crash: `spyglass down` for our state dir and both pin dirs."""
    return spyglass_down(names, names.agent_pin_dir) + spyglass_down(names, names.bcc_pin_dir)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", type=parse_rates, default=parse_rates("10k,20k,50k,100k,max"),
                    help="packets/s per rung, comma-separated; max = as fast as it goes")
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds per rung")
    ap.add_argument("--refine", type=int, default=0, metavar="N",
                    help="bisection steps between the last zero-loss rung and the first lossy")
    ap.add_argument("--readers", default="chdb,none,bcc",
                    help="which readers, in order: chdb (store on), none (--store none), "
                         "bcc (bcc's defaults: 8 pages per CPU), bcc:PAGES (another page_cnt)")
    ap.add_argument("--no-latency", action="store_true",
                    help="no latency client: the agent serves no live stream during the rungs")
    ap.add_argument("--clients", action="store_true",
                    help="in each rung of the Spyglass readers, two `spyglass observe -f` "
                         f"clients: A filtered on port {SPLIT_SPORT} (1%% of the flood), "
                         "B unfiltered; report what each received and was told it lost")
    ap.add_argument("--client-api", choices=("ws", "grpc"), default="ws",
                    help="with --clients: the CLI over the WebSocket (ws), or Hubble's gRPC "
                         "GetFlows with follow (grpc, bench/grpc_client.py)")
    ap.add_argument("--prefix", default="sgbe", help="lab netns/link prefix (unique per run)")
    ap.add_argument("--state-dir", default="/tmp/sg/bench-e2e-state")
    ap.add_argument("--pod-cidr", default="10.201.90.0/24")
    ap.add_argument("--json", metavar="FILE", help="also write every row as JSON")
    ap.add_argument("--cleanup", action="store_true", help="remove what a crashed run left")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix=f"{args.prefix}-e2e-"))
    names = Names(args.prefix, args.state_dir, args.pod_cidr, tmp)
    seen = Seen()
    try:
        if args.cleanup:
            for line in cleanup(names):
                print(line)
            return 0
        preflight(names)
        os.makedirs(args.state_dir, exist_ok=True)
        manifest = tmp / "manifest.yaml"
        manifest.write_text(manifest_text())
        readers = [r.strip() for r in args.readers.split(",") if r.strip()]
        if not readers or any(not valid_reader(r) for r in readers):
            raise BenchError("--readers takes chdb, none, bcc and bcc:PAGES (a power of two)")
        print(environment())
        print(f"ladder {', '.join(rate_label(r) for r in args.rates)} pkt/s, {args.seconds:g} s "
              f"per rung; UDP {PAYLOAD}-byte payloads, sendmmsg x64; probes every "
              f"{PROBE_MS:g} ms from port {PROBE_SPORT}; aggregation none; lab prefix "
              f"{args.prefix}, state {args.state_dir}")
        results: dict[str, list[Row]] = {}
        with sigterm_as_interrupt():
            binary = compile_sender(str(tmp))
            sender = Sender(binary, seen)
            for which in readers:
                reader: AgentReader | BccReader = (
                    BccReader(names, seen, manifest, bcc_pages(which))
                    if which.startswith("bcc")
                    else AgentReader(names, seen, which == "chdb", manifest))
                reader.latency = not args.no_latency
                if isinstance(reader, AgentReader):
                    reader.clients = args.clients
                    reader.client_api = args.client_api
                try:
                    results[reader.name] = run_reader(reader, sender, args.rates, args.seconds,
                                                      args.refine)
                finally:
                    with shielded():
                        sender.stop()
                        for line in reader.close():
                            print(f"   cleanup: {line}")
        report(results, args)
        if args.json:
            Path(args.json).write_text(json.dumps(
                {name: [rows_json(r) for r in rows] for name, rows in results.items()},
                indent=1))
        return 0
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        if not args.cleanup:
            left = leftovers(names, seen)
            print("left behind: " + (", ".join(left) if left else "nothing (netns, links, pins, "
                                     "processes and the lab state are gone)"))
        shutil.rmtree(tmp, ignore_errors=True)


def rows_json(r: Row) -> dict[str, Any]:
    return {"target": r.target, "refined": r.refined, "sent": r.send.sent,
            "elapsed_s": r.send.elapsed_s, "pps": r.send.pps, "send_errors": r.send.errors,
            "sender_cpu_s": r.send.cpu_s, "offered": r.offered, "failed": r.failed,
            "delivered": r.delivered, "stored": r.stored, "lost": r.lost, "refused": r.refused,
            "lost_cb": r.lost_cb, "reader_cpu_s": r.cpu_s, "machine_busy_s": r.busy_s,
            "latency_p50_ms": r.pct(0.5), "latency_p99_ms": r.pct(0.99),
            "latency_n": len(r.latency_ms), "balanced": r.balanced,
            "store_balanced": r.store_balanced, "zero_loss": r.zero_loss,
            "split": r.send.split,
            "clients": [{"name": c.name, "flows": c.flows, "told_lost": c.told_lost,
                         "exit_code": c.exit_code} for c in r.clients]}


def report(results: dict[str, list[Row]], args: argparse.Namespace) -> None:
    print(f"\n{environment()}")
    for name, rows in results.items():
        lat = "packet to callback" if name.startswith("bcc") else "packet to client (WebSocket)"
        if args.no_latency:
            lat = "not measured (--no-latency)"
        print_table(name, rows, lat)
        ok = all(r.balanced and r.store_balanced is not False for r in rows)
        store = any(r.stored is not None for r in rows)
        what = "offered == delivered + lost before the ring"
        what += " and delivered == stored + STORE" if store else ""
        print(f"  accounting {what}: {'holds on every row' if ok else 'DOES NOT HOLD (see rows)'}")
        if any(r.clients for r in rows):
            print_clients(rows, args.client_api)
    print("\nzero-loss rate (fastest rung with nothing lost before the ring or to the store)")
    zl: dict[str, float | None] = {}
    for name, rows in results.items():
        zl[name], text = zero_loss_rate(rows)
        print(f"  {name:<24} {text}")
    base = "bcc defaults" if "bcc defaults" in zl else next(
        (n for n in zl if n.startswith("bcc")), None)
    for name, rate in zl.items():
        if base is None or name == base:
            continue
        b = zl[base]
        if rate is None:
            print(f"  {name} / {base}: spyglass lost at every rung")
        elif b is None:
            low = min(r.send.pps for r in results[base])
            print(f"  {name} / {base}: > {rate / low:.1f}x (the baseline lost at every rung)")
        else:
            print(f"  {name} / {base}: {rate / b:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
