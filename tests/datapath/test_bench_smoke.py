"""A tiny run of bench/kube_proxy.py: N=5, one repetition of each mode.

It checks what the full benchmark relies on: each load balancer programs, the
client's connections to the first and the last VIP reach only that service's
endpoints, an endpoint change takes effect, and each mode removes every rule,
chain, table and pin it made. The testbed uses its own /16 (172.28.0.0/16) and
nft table name, so it can run beside a real benchmark run; the SGTK-* iptables
chains are shared, so the iptables modes skip (with the reason) if a
benchmark holds them.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.datapath, pytest.mark.timeout(120)]

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
kp = importlib.import_module("kube_proxy")
kpr = importlib.import_module("kube_proxy_rules")
tb = importlib.import_module("testbed")

TAG = f"{os.getpid() % 100000}"
PREFIX = "172.28.0.0/16"
N = 5


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    import shutil

    for tool in ("gcc", "nft", "iptables-legacy-restore", "iptables-nft-restore"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed: apt-get install gcc iptables nftables")
    plan = tb.Plan(TAG, PREFIX)
    tool = tb.build_tool(str(tmp_path_factory.mktemp("sgtK")))
    testbed = tb.Testbed.create(plan, tool)
    try:
        yield testbed
    finally:
        testbed.close()


def _mode(name: str, testbed: object) -> object:
    plan = testbed.plan  # type: ignore[attr-defined]
    if name == "nftables":
        return kp.NftablesMode(plan.client_if, str(plan.pod_net), table=f"sgtk_kp_{TAG}")
    if name.startswith("iptables-"):
        mode = kp.IptablesMode(name.split("-", 1)[1], plan.client_if, str(plan.pod_net))
        if kpr.our_iptables_chains(mode._saved()):
            pytest.skip(f"SGTK-* chains exist in {name}: a benchmark run holds them")
        return mode
    if name == "spyglass":
        why = kp.SpyglassMode.available()
        if why:
            pytest.skip(why)
    return kp.make_mode(name, testbed, plan)


@pytest.mark.parametrize("name", [pytest.param(m, id=m) for m in kp.MODES])
def test_mode_reaches_backends_and_cleans_up(bed: object, name: str) -> None:
    plan = bed.plan  # type: ignore[attr-defined]
    pool = bed.backend_ips  # type: ignore[attr-defined]
    services = kpr.make_services(N, [plan.vip(i) for i in range(N)], pool, tb.SERVER_PORT)
    mode = _mode(name, bed)
    rec = kp.run_mode(mode, bed, services, pool, rep=0, seconds=0.2, check_seconds=0.2)
    assert set(rec.runs) == {"first/connect", "first/rr", "last/connect", "last/rr"}
    for key, run in rec.runs.items():
        svc = services[0] if key.startswith("first") else services[-1]
        allowed = {svc.endpoints[0][0]} if name == "direct" else {ip for ip, _ in svc.endpoints}
        assert run["count"] > 0 and run["errors"] == 0, (key, run)
        if key.endswith("rr"):
            assert sum(run["replies"].values()) == run["count"]
            assert set(run["replies"]) <= allowed, (key, run["replies"])
    if name != "direct":
        # 10 endpoints, a few hundred connections: the pick really spreads.
        assert len(rec.runs["last/rr"]["replies"]) >= 3
        assert rec.program_s > 0 and rec.change_s > 0
    assert mode.leftovers() == []  # type: ignore[attr-defined]


def test_untranslated_vip_fails_fast_instead_of_leaving_the_host(bed: object) -> None:
    plan = bed.plan  # type: ignore[attr-defined]
    res = bed.run_client(plan.vip(0), 80, 0.05, "connect")  # type: ignore[attr-defined]
    assert res.count == 0 and res.errors > 0
    assert res.first_error == "connect: No route to host"  # EHOSTUNREACH from our route


def test_testbed_removes_everything_it_made(tmp_path: Path) -> None:
    plan = tb.Plan(f"{TAG}9"[-5:], "172.27.0.0/16")  # the module testbed holds PREFIX
    testbed = tb.Testbed.create(plan, tb.build_tool(str(tmp_path)))
    assert tb.leftovers(plan)  # it exists while open
    pids = [p.pid for p in testbed.servers]
    testbed.close()
    assert tb.leftovers(plan) == []
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
