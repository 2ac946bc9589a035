"""Spyglass's eBPF service load balancing against kube-proxy's iptables and nftables rules.

One process run builds a testbed (bench/testbed.py), then for each N in --sizes
and each repetition runs every mode in turn (the order rotates per
repetition): program N services x 10 endpoints, measure a sequential C client
against the first and the last service, change one endpoint, check where
connections now go, remove everything and check that nothing is left.

Modes:
  direct           no load balancer: the client connects to a backend address
                   (the floor that per-connection costs are compared with)
  iptables-legacy  kube-proxy's iptables rules through iptables-legacy-restore
  iptables-nft     the same text through iptables-nft-restore
  nftables         kube-proxy's nftables mode: service-ips verdict map,
                   numgen random per service, DNAT
  spyglass         Spyglass's datapath (Datapath + load_services), attached to
                   every testbed veth, with its perf events read as they come

Everything it makes is named sgtK-* / SGTK-* / sgtk_kp and removed by name.
The rule text each mode loads comes from bench/kube_proxy_rules.py (pure, unit
tested without root); this file sets up, loads, measures, checks and reports.

    sudo .venv/bin/python bench/kube_proxy.py [--sizes 100,1000,10000] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testbed as tb  # noqa: E402  (bench/ is not a package)
from kube_proxy_rules import (  # noqa: E402
    IPT_COMMENT,
    IPT_SERVICES,
    NAT_BUILTIN_CHAINS,
    NFT_TABLE,
    BenchError,
    Service,
    declared_chains,
    iptables_change_text,
    iptables_flush_restore_text,
    iptables_jump_args,
    iptables_remove_text,
    iptables_restore_text,
    make_services,
    nft_change_text,
    nft_ruleset_text,
    our_iptables_chains,
    sep_chains_changed,
    with_one_endpoint_changed,
)

MODES = ("direct", "iptables-legacy", "iptables-nft", "nftables", "spyglass")


# -- modes ----------------------------------------------------------------------------------

def _run(argv: list[str], stdin: str | None = None, what: str = "") -> float:
    """Run a tool; returns its wall time. Raises with its stderr on failure."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BenchError(f"{what or argv[0]} failed ({proc.returncode}): "
                         f"{proc.stderr.strip()[-2000:]}")
    return elapsed


def _nft_table_exists(table: str) -> bool:
    proc = subprocess.run(["nft", "list", "tables", "ip"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"nft failed: {proc.stderr.strip()}: install nftables "
                         "(apt-get install nftables)")
    return f"table ip {table}" in proc.stdout.splitlines()


class Mode(Protocol):
    name: str
    def program(self, services: Sequence[Service]) -> float: ...
    def change(self, old: Service, new: Service) -> float: ...
    def remove(self) -> float: ...
    def leftovers(self) -> list[str]: ...


class DirectMode:
    """No translation at all: the client dials an endpoint address itself."""

    name = "direct"

    def program(self, services: Sequence[Service]) -> float:
        return 0.0

    def change(self, old: Service, new: Service) -> float:
        return 0.0

    def remove(self) -> float:
        return 0.0

    def leftovers(self) -> list[str]:
        return []


class IptablesMode:
    """kube-proxy's iptables proxier through iptables-legacy or iptables-nft.

    Programming is `iptables-restore --noflush`, as kube-proxy does. Debian 12's
    iptables-nft 1.8.9 is quadratic in that mode (500 services 5.5 s, 1,000
    27 s, 2,000 96 s: userspace strcmp), so above `noflush_max` services the
    nft variant loads the same rules with a plain (flushing) restore of the
    whole nat table instead, which it may only do while nft's `ip nat` table
    did not exist before this mode made it, i.e. everything in it is ours.
    """

    def __init__(self, variant: str, client_if: str, pod_cidr: str,
                 noflush_max: int = 1000) -> None:
        self.name = f"iptables-{variant}"
        self.variant, self.client_if, self.pod_cidr = variant, client_if, pod_cidr
        self.noflush_max = noflush_max
        self.flush_loaded = False  # the last program() used the flushing restore
        self._chains: list[str] = []
        self._made_nft_nat = False  # iptables-nft creates nft's `ip nat` table on first use

    def _tool(self, suffix: str = "") -> str:
        return f"iptables-{self.variant}{suffix}"

    def _jump(self, op: str) -> list[str]:
        return [self._tool(), "-w", "-t", "nat", op, *iptables_jump_args(self.client_if)]

    def _saved(self) -> str:
        proc = subprocess.run([self._tool("-save"), "-t", "nat"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BenchError(f"{self._tool('-save')} failed: {proc.stderr.strip()}: install "
                             "iptables (apt-get install iptables)")
        return proc.stdout

    def program(self, services: Sequence[Service]) -> float:
        present = our_iptables_chains(self._saved())
        if present:
            raise BenchError(f"{self.name}: SGTK-* chains already exist ({present[0]}, ...): "
                             "another bench run is active or crashed; run with --cleanup TAG")
        if self.variant == "nft":
            self._made_nft_nat = not _nft_table_exists("nat")
        text = iptables_restore_text(services, self.pod_cidr)
        self._chains = declared_chains(text)
        self.flush_loaded = self.variant == "nft" and len(services) > self.noflush_max
        if self.flush_loaded and not self._made_nft_nat:
            raise BenchError(f"{self.name}: {len(services)} services need the flushing restore "
                             "(see IptablesMode), but nft's table ip nat already exists and may "
                             "hold others' rules: run at most --ipt-nft-noflush-max services")
        try:
            if self.flush_loaded:
                full = iptables_flush_restore_text(text, self.client_if)
                return _run([self._tool("-restore"), "-w"], full,
                            f"{self.name} flushing restore of {len(services)} services")
            elapsed = _run([self._tool("-restore"), "-w", "--noflush"], text,
                           f"{self.name} restore of {len(services)} services")
            _run(self._jump("-I"), what=f"{self.name}: inserting the PREROUTING jump")
        except BaseException:
            self.remove()
            raise
        return elapsed

    def change(self, old: Service, new: Service) -> float:
        text = iptables_change_text(old, new, self.pod_cidr)
        elapsed = _run([self._tool("-restore"), "-w", "--noflush"], text,
                       f"{self.name} endpoint change")
        added, gone = sep_chains_changed(old, new)
        self._chains = [c for c in self._chains if c not in gone] + added
        return elapsed

    def _nat_table_is_all_ours(self) -> bool:
        """nft's ip nat holds only SGTK-* chains and, in its base chains, only our jump."""
        proc = subprocess.run(["nft", "-j", "list", "chains", "ip"], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            return False
        chains = [item["chain"]["name"] for item in json.loads(proc.stdout)["nftables"]
                  if "chain" in item and item["chain"]["table"] == "nat"]
        if any(c not in NAT_BUILTIN_CHAINS and not c.startswith("SGTK-") for c in chains):
            return False
        for chain in set(chains) & set(NAT_BUILTIN_CHAINS):
            body = subprocess.run(["nft", "list", "chain", "ip", "nat", chain],
                                  capture_output=True, text=True).stdout.splitlines()
            rules = [ln.strip() for ln in body[3:] if ln.strip() not in ("", "}")]
            ours = (f'iifname "{self.client_if}"', f"jump {IPT_SERVICES}")  # nft hides comments
            if any(not all(part in r for part in ours) for r in rules):
                return False
        return True

    def remove(self) -> float:
        t0 = time.perf_counter()
        if (self._made_nft_nat and _nft_table_exists("nat")
                and self._nat_table_is_all_ours()):
            # Everything in it is ours: one delete instead of a huge (quadratic) restore.
            _run(["nft", "delete", "table", "ip", "nat"], what="nft delete table ip nat")
        else:
            while subprocess.run(self._jump("-C"), capture_output=True).returncode == 0:
                _run(self._jump("-D"), what=f"{self.name}: deleting the PREROUTING jump")
            existing = set(our_iptables_chains(self._saved()))
            ours = [c for c in self._chains if c in existing]
            if ours:
                _run([self._tool("-restore"), "-w", "--noflush"], iptables_remove_text(ours),
                     f"{self.name}: removing our chains")
        self._chains = []
        return time.perf_counter() - t0

    def leftovers(self) -> list[str]:
        saved = self._saved()
        found = [f"{self.name} chain {c}" for c in our_iptables_chains(saved)]
        if IPT_COMMENT in saved:
            found.append(f"{self.name} PREROUTING jump")
        if self._made_nft_nat and _nft_table_exists("nat"):
            found.append("nft table ip nat (made by iptables-nft-restore)")
        return found


class NftablesMode:
    """kube-proxy's nftables proxier, in our own table."""

    name = "nftables"

    def __init__(self, client_if: str, pod_cidr: str, table: str = NFT_TABLE) -> None:
        self.client_if, self.pod_cidr, self.table = client_if, pod_cidr, table

    def _exists(self) -> bool:
        return _nft_table_exists(self.table)

    def program(self, services: Sequence[Service]) -> float:
        if self._exists():
            raise BenchError(f"nft table ip {self.table} already exists: another bench run is "
                             "active or crashed; run with --cleanup TAG")
        text = nft_ruleset_text(services, self.client_if, self.pod_cidr, self.table)
        try:
            return _run(["nft", "-f", "-"], text, f"nft -f of {len(services)} services")
        except BaseException:
            self.remove()
            raise

    def change(self, old: Service, new: Service) -> float:
        return _run(["nft", "-f", "-"], nft_change_text(old, new, self.pod_cidr, self.table),
                    "nft endpoint change")

    def remove(self) -> float:
        t0 = time.perf_counter()
        if self._exists():
            _run(["nft", "delete", "table", "ip", self.table], what="nft delete table")
        return time.perf_counter() - t0

    def leftovers(self) -> list[str]:
        return [f"nft table ip {self.table}"] if self._exists() else []


class SpyglassMode:
    """Spyglass's datapath on every testbed veth, services loaded by diff, and
    its events read by the collector's perf reader while the client runs."""

    name = "spyglass"
    CLIENT_IDENTITY, BACKEND_IDENTITY = 30001, 30002

    def __init__(self, bed: tb.Testbed, pin_dir: str) -> None:
        self.bed, self.pin_dir = bed, pin_dir
        self.dp: Any = None
        self.events = 0
        self.lost = 0
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None

    @staticmethod
    def available() -> str | None:
        """Why the mode cannot run here (None if it can)."""
        try:
            from spyglass.bpf.datapath import Datapath
            from spyglass.model import services  # noqa: F401
        except ImportError as exc:
            return f"spyglass.model.services is not importable ({exc}): the LB has not landed"
        if not hasattr(Datapath, "load_services"):
            return "Datapath.load_services does not exist yet: the LB has not landed"
        return None

    @staticmethod
    def entry(svc: Service) -> Any:
        from spyglass.model.services import ServiceEntry

        return ServiceEntry(service_id=svc.index + 1, vip=svc.vip, port=svc.port, proto=6,
                            backends=svc.endpoints, name=svc.name, namespace=svc.namespace)

    def _setup(self) -> None:
        from spyglass.bpf.datapath import Datapath, DatapathEndpoint

        self.dp = Datapath(pin_dir=self.pin_dir)
        pods = [(self.bed.client, self.CLIENT_IDENTITY)] + [(p, self.BACKEND_IDENTITY)
                                                            for p in self.bed.backends]
        for ep_id, (pod, identity) in enumerate(pods, start=101):
            assert pod is not None
            self.dp.upsert_endpoint(DatapathEndpoint(pod.host_idx, pod.host_if, ep_id, identity,
                                                     pod.ips[0]))
            for ip in pod.ips[1:]:
                self.dp.upsert_ipcache(f"{ip}/32", identity, ep_id)
            self.dp.attach(pod.host_idx)
        self._stop.clear()
        self._reader = threading.Thread(target=self._read_events, daemon=True)
        self._reader.start()

    def _read_events(self) -> None:
        from spyglass.collector.perf import PerfReader

        with PerfReader(self.dp.events_map_fd) as reader:
            while not self._stop.is_set():
                batch = reader.read(timeout_ms=50)
                self.events += len(batch)
                self.lost += sum(batch.lost_by_cpu.values())

    def program(self, services: Sequence[Service]) -> float:
        try:
            self._setup()
            entries = [self.entry(s) for s in services]
            t0 = time.perf_counter()
            self.dp.load_services(entries)
            return time.perf_counter() - t0
        except BaseException:
            self.remove()
            raise

    def change(self, old: Service, new: Service) -> float:
        t0 = time.perf_counter()
        self.dp.update_service(self.entry(new))
        return time.perf_counter() - t0

    def remove(self) -> float:
        t0 = time.perf_counter()
        self._stop.set()
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None
        if self.dp is not None:
            self.dp.close()
            self.dp = None
        return time.perf_counter() - t0

    def leftovers(self) -> list[str]:
        return [f"pin dir {self.pin_dir}"] if os.path.exists(self.pin_dir) else []


# -- the run -------------------------------------------------------------------------------

@dataclass
class Record:
    """One mode at one N in one repetition."""

    mode: str
    n: int
    rep: int
    program_s: float = 0.0
    change_s: float = 0.0
    remove_s: float = 0.0
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # "last/connect" -> result
    events_per_conn: float | None = None
    lost: int = 0
    flush_loaded: bool = False  # programmed with a flushing restore (see IptablesMode)


def _result_dict(res: tb.ClientResult) -> dict[str, Any]:
    d = asdict(res)
    d.update(rate=res.rate, cpu_us_per_conn=res.cpu_us_per_conn)
    return d


def _check_reaches(res: tb.ClientResult, allowed: set[str], what: str) -> None:
    if res.errors or not res.count:
        raise BenchError(f"{what}: {res.errors} failed connections of {res.count + res.errors} "
                         f"({res.first_error or 'none completed'})")
    stray = set(res.replies) - allowed
    if stray:
        raise BenchError(f"{what}: replies from {sorted(stray)}, which are not endpoints")


def make_mode(name: str, bed: tb.Testbed, plan: tb.Plan, noflush_max: int = 1000) -> Mode:
    pod_cidr = str(plan.pod_net)
    if name == "direct":
        return DirectMode()
    if name in ("iptables-legacy", "iptables-nft"):
        return IptablesMode(name.split("-", 1)[1], plan.client_if, pod_cidr, noflush_max)
    if name == "nftables":
        return NftablesMode(plan.client_if, pod_cidr)
    if name == "spyglass":
        return SpyglassMode(bed, f"/sys/fs/bpf/sgtK-{plan.tag}")
    raise BenchError(f"unknown mode {name!r}: choose from {', '.join(MODES)}")


def run_mode(mode: Mode, bed: tb.Testbed, services: Sequence[Service], pool: Sequence[str],
             rep: int, seconds: float, check_seconds: float = 0.3) -> Record:
    """Program, measure first and last service, change an endpoint, verify, remove."""
    rec = Record(mode.name, len(services), rep)
    direct = isinstance(mode, DirectMode)
    events0 = conns = 0
    try:
        rec.program_s = mode.program(services)
        rec.flush_loaded = bool(getattr(mode, "flush_loaded", False))
        for position, svc in (("first", services[0]), ("last", services[-1])):
            ip, port = (svc.endpoints[0] if direct else (svc.vip, svc.port))
            allowed = {ip} if direct else {e[0] for e in svc.endpoints}
            probe = bed.run_client(ip, port, check_seconds, "rr")
            _check_reaches(probe, allowed, f"{mode.name} N={len(services)} {position} service")
            events0 = getattr(mode, "events", 0) if position == "first" else events0
            for kind in ("connect", "rr"):
                tb.settle()
                res = bed.run_client(ip, port, seconds, kind)
                _check_reaches(res, allowed, f"{mode.name} {kind} {position}")
                rec.runs[f"{position}/{kind}"] = _result_dict(res)
                conns += res.count
        if hasattr(mode, "events"):
            rec.events_per_conn = (mode.events - events0) / max(conns, 1)
            rec.lost = mode.lost  # type: ignore[attr-defined]
        if not direct:
            old = services[-1]
            new = with_one_endpoint_changed(old, pool)
            rec.change_s = mode.change(old, new)
            res = bed.run_client(new.vip, new.port, check_seconds, "rr")
            _check_reaches(res, {e[0] for e in new.endpoints}, f"{mode.name} after the change")
            if new.endpoints[-1][0] not in res.replies:
                raise BenchError(f"{mode.name}: no connection reached the new endpoint "
                                 f"{new.endpoints[-1][0]} in {res.count} tries")
    finally:
        rec.remove_s = mode.remove()
        left = mode.leftovers()
        if left:
            raise BenchError(f"{mode.name} left {', '.join(left)} behind")
    return rec


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(records: Sequence[Record]) -> dict[tuple[str, int], dict[str, float]]:
    """Medians over repetitions of every figure, per (mode, N)."""
    groups: dict[tuple[str, int], list[Record]] = {}
    for rec in records:
        groups.setdefault((rec.mode, rec.n), []).append(rec)
    out: dict[tuple[str, int], dict[str, float]] = {}
    for key, recs in groups.items():
        row: dict[str, float] = {"reps": len(recs),
                                 "program_s": _median([r.program_s for r in recs]),
                                 "change_s": _median([r.change_s for r in recs]),
                                 "remove_s": _median([r.remove_s for r in recs]),
                                 "flush_loaded": float(any(r.flush_loaded for r in recs))}
        for run in ("first/connect", "first/rr", "last/connect", "last/rr"):
            for fld in ("rate", "p50_us", "p99_us", "cpu_us_per_conn"):
                row[f"{run}/{fld}"] = _median([r.runs[run][fld] for r in recs if run in r.runs])
        epc = [r.events_per_conn for r in recs if r.events_per_conn is not None]
        if epc:
            row["events_per_conn"] = _median(epc)
            row["lost"] = max(r.lost for r in recs)
        out[key] = row
    return out


def _fmt_rate(x: float) -> str:
    return f"{x / 1000:.1f}k" if x == x else "-"


def _fmt_time(s: float) -> str:
    if s != s:
        return "-"
    return f"{s * 1e6:.0f} µs" if s < 1e-3 else f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def render(summary: dict[tuple[str, int], dict[str, float]], modes: Sequence[str],
           sizes: Sequence[int]) -> str:
    """Markdown tables: per-mode figures, then Spyglass's ratios at target last."""
    out = ["| N | mode | conn/s first | conn/s last | connect p50/p99 µs | conn+req/resp "
           "p50/p99 µs | CPU µs/conn | over direct | program | one endpoint change |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for n in sizes:
        base = summary.get(("direct", n), {}).get("last/connect/cpu_us_per_conn", float("nan"))
        for mode in modes:
            r = summary.get((mode, n))
            if r is None:
                continue
            cpu = r["last/connect/cpu_us_per_conn"]
            extra = "-" if mode == "direct" or base != base else f"{cpu - base:+.1f}"
            out.append(
                f"| {n:,} | {mode} | {_fmt_rate(r['first/connect/rate'])} | "
                f"{_fmt_rate(r['last/connect/rate'])} | {r['last/connect/p50_us']:.0f} / "
                f"{r['last/connect/p99_us']:.0f} | {r['last/rr/p50_us']:.0f} / "
                f"{r['last/rr/p99_us']:.0f} | {cpu:.1f} | {extra} | "
                f"{'-' if mode == 'direct' else _fmt_time(r['program_s'])}"
                f"{' †' if r['flush_loaded'] else ''} | "
                f"{'-' if mode == 'direct' else _fmt_time(r['change_s'])} |")
    if any(r["flush_loaded"] for r in summary.values()):
        out.append("\n† loaded by a flushing iptables-nft-restore of our own nat table: "
                   "kube-proxy's --noflush restore is quadratic in iptables-nft 1.8.9 "
                   "(see IptablesMode)")
    others = [m for m in ("iptables-legacy", "iptables-nft", "nftables") if m in modes]
    if "spyglass" in modes and others:
        out += ["", "| N | " + " | ".join(f"spyglass / {m} conn/s (last)" for m in others) + " |",
                "|---|" + "---|" * len(others)]
        for n in sizes:
            sg = summary.get(("spyglass", n))
            if sg is None:
                continue
            cells = []
            for m in others:
                r = summary.get((m, n))
                cells.append(f"{sg['last/connect/rate'] / r['last/connect/rate']:.2f}×"
                             if r else "-")
            out.append(f"| {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def cleanup(tag: str, prefix: str) -> list[str]:
    """Remove whatever a crashed run with this tag left: ours only, by name."""
    plan = tb.Plan(tag, prefix)
    done: list[str] = []
    for variant in ("legacy", "nft"):
        mode = IptablesMode(variant, plan.client_if, str(plan.pod_net))
        try:
            mode._chains = our_iptables_chains(mode._saved())
            if mode._chains or mode.leftovers():
                mode.remove()
                done.append(f"removed {mode.name} SGTK-* chains and jump")
        except (BenchError, FileNotFoundError) as exc:
            done.append(f"{mode.name}: {exc}")
    nft = NftablesMode(plan.client_if, str(plan.pod_net))
    try:
        if nft.leftovers():
            nft.remove()
            done.append(f"deleted nft table ip {nft.table}")
    except (BenchError, FileNotFoundError) as exc:
        done.append(f"nftables: {exc}")
    try:
        from spyglass.bpf.datapath import cleanup as dp_cleanup

        done += dp_cleanup(f"/sys/fs/bpf/sgtK-{tag}", f"sgtK{tag}")
    except ImportError:
        pass
    done += tb.remove_leftovers(plan)
    return done


def run(sizes: Sequence[int], modes: Sequence[str], reps: int, seconds: float, tag: str,
        prefix: str, noflush_max: int = 1000,
        log: Any = print) -> tuple[list[Record], dict[str, str]]:
    """The whole benchmark in one testbed. Returns the records and the modes skipped (why)."""
    skipped: dict[str, str] = {}
    if "spyglass" in modes and (why := SpyglassMode.available()):
        skipped["spyglass"] = why
        modes = [m for m in modes if m != "spyglass"]
    plan = tb.Plan(tag, prefix)
    if max(sizes) > plan.vip_net.num_addresses - 2:
        raise BenchError(f"N={max(sizes)} does not fit in the VIP range {plan.vip_net}")
    records: list[Record] = []
    with tb.tool_dir() as tmp:
        tool = tb.build_tool(tmp)
        with tb.Testbed.create(plan, tool) as bed:
            pool = bed.backend_ips
            for n in sizes:
                services = make_services(n, [plan.vip(i) for i in range(n)], pool,
                                         tb.SERVER_PORT)
                for rep in range(reps):
                    order = list(modes[rep % len(modes):]) + list(modes[:rep % len(modes)])
                    for name in order:
                        rec = run_mode(make_mode(name, bed, plan, noflush_max), bed,
                                       services, pool, rep, seconds)
                        records.append(rec)
                        log(f"N={n:>6} rep={rep} {name:<16} "
                            f"last {rec.runs['last/connect']['rate']:>8.0f} conn/s  "
                            f"program {_fmt_time(rec.program_s):>9}  "
                            f"change {_fmt_time(rec.change_s):>9}")
    return records, skipped


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,1000,10000", help="comma-separated N")
    ap.add_argument("--modes", default=",".join(MODES), help=f"subset of {','.join(MODES)}")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.5, help="per client run")
    ap.add_argument("--prefix", default="172.29.0.0/16", help="a /16 no host route uses")
    ap.add_argument("--tag", default=str(os.getpid() % 100000))
    ap.add_argument("--ipt-nft-noflush-max", type=int, default=1000, metavar="N",
                    help="above N services, iptables-nft loads with a flushing restore of "
                    "its own nat table (--noflush is quadratic in iptables-nft 1.8.9)")
    ap.add_argument("--json", help="write every record here")
    ap.add_argument("--cleanup", metavar="TAG", help="remove what a crashed run left, and exit")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("error: needs root (namespaces, netfilter rules, eBPF): run with sudo",
              file=sys.stderr)
        return 2
    if args.cleanup:
        for line in cleanup(args.cleanup, args.prefix):
            print(line)
        return 0
    try:
        sizes = [int(x) for x in args.sizes.split(",") if x]
    except ValueError:
        print(f"error: --sizes {args.sizes!r} must be comma-separated integers", file=sys.stderr)
        return 2
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad or not sizes or min(sizes) < 1 or args.reps < 1:
        print(f"error: modes must come from {', '.join(MODES)}, sizes >= 1, reps >= 1",
              file=sys.stderr)
        return 2
    t0 = time.monotonic()
    load0 = os.getloadavg()[0]
    main_pid = os.getpid()

    def on_term(signum: int, _frame: object) -> None:
        if os.getpid() != main_pid:  # a forked helper (pyroute2's NetNS): die as by default
            os._exit(128 + signum)
        raise KeyboardInterrupt(f"signal {signum}")  # so that every finally: cleans up

    signal.signal(signal.SIGTERM, on_term)
    try:
        records, skipped = run(sizes, modes, args.reps, args.seconds, args.tag, args.prefix,
                               args.ipt_nft_noflush_max)
    except (BenchError, tb.TestbedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; everything made so far was removed", file=sys.stderr)
        return 130
    modes = [m for m in modes if m not in skipped]
    print(f"\nclient: C (bench/kube_proxy_client.c), sequential, one connection at a time; "
          f"{args.seconds}s per run; medians of {args.reps} repetitions; "
          f"{os.cpu_count()} CPUs; load average {load0:.2f} -> {os.getloadavg()[0]:.2f}; "
          f"{time.monotonic() - t0:.0f} s in all")
    for mode, why in skipped.items():
        print(f"skipped {mode}: {why}")
    summary = summarize(records)
    print(render(summary, modes, sizes))
    for (mode, n), row in sorted(summary.items()):
        if "events_per_conn" in row:
            print(f"{mode} N={n}: {row['events_per_conn']:.1f} events/connection read, "
                  f"{row['lost']:.0f} lost")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([asdict(r) for r in records], fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
