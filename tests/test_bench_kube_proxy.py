"""The kube-proxy benchmark's rule generators (bench/kube_proxy_rules.py), as text (no kernel).

These check that the iptables-restore and nft inputs have kube-proxy's shape
(one KUBE-SERVICES rule per ClusterIP:port in order, statistic-random endpoint
picks whose probabilities give each endpoint 1/n, DNAT per endpoint; a
service-ips verdict map and numgen per service), that everything is scoped to
our own names and interface, and that the partial updates and the removal
touch exactly the chains they should. The testbed's plan and the runner's
summary table (bench/kube_proxy.py) are checked here too, as they need no root.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
kpr = importlib.import_module("kube_proxy_rules")
kp = importlib.import_module("kube_proxy")
tb = importlib.import_module("testbed")

POD_CIDR = "172.29.128.0/17"
POOL = [f"172.29.128.{i}" for i in range(1, 21)]


def services(n: int) -> list[object]:
    return kpr.make_services(n, [f"172.29.{i // 250}.{i % 250 + 1}" for i in range(n)], POOL,
                             tb.SERVER_PORT)


def ipt_rules(text: str, chain: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"-A {chain} ")]


@pytest.mark.parametrize("n", [pytest.param(1, id="one"), pytest.param(7, id="seven"),
                               pytest.param(1000, id="thousand")])
def test_iptables_text_has_one_services_rule_per_service_in_order(n: int) -> None:
    svcs = services(n)
    text = kpr.iptables_restore_text(svcs, POD_CIDR)
    rules = ipt_rules(text, kpr.IPT_SERVICES)
    assert len(rules) == n + 1
    vips = [re.search(r"-d (\S+)/32", r).group(1) for r in rules[:-1]]  # type: ignore[union-attr]
    assert vips == [s.vip for s in svcs]  # services[0] matched first, services[-1] last
    assert all(r.endswith(f"-j {kpr.svc_chain(s)}") for r, s in zip(rules[:-1], svcs, strict=True))
    assert "--dport 80" in rules[0] and "-p tcp" in rules[0]
    assert rules[-1].endswith(f"-j {kpr.IPT_NODEPORTS}") and "--dst-type LOCAL" in rules[-1]
    declared = [line[1:].split()[0] for line in text.splitlines() if line.startswith(":")]
    assert len(declared) == len(set(declared)) == 3 + n * (1 + kpr.ENDPOINTS_PER_SERVICE)
    assert all(c.startswith("SGTK-") and len(c) <= 28 for c in declared)
    assert text.startswith("*nat\n") and text.endswith("COMMIT\n")
    assert "PREROUTING" not in text  # the jump is added on its own, scoped to our veth


def test_iptables_service_chain_picks_each_endpoint_with_equal_chance() -> None:
    svc = services(3)[2]
    text = kpr.iptables_restore_text([svc], POD_CIDR)
    rules = ipt_rules(text, kpr.svc_chain(svc))
    assert "! -s 172.29.128.0/17" in rules[0] and rules[0].endswith(f"-j {kpr.IPT_MARK_MASQ}")
    picks = rules[1:]
    assert [r.split("-j ")[-1] for r in picks] == [kpr.sep_chain(svc, ep) for ep in svc.endpoints]
    probs = [float(m.group(1)) if (m := re.search(r"--probability (\S+)", r)) else 1.0
             for r in picks]
    assert "statistic" not in picks[-1]
    left, shares = 1.0, []
    for p in probs:
        shares.append(left * p)
        left *= 1 - p
    assert shares == pytest.approx([0.1] * 10, abs=1e-9)


def test_iptables_endpoint_chains_dnat_to_their_endpoint() -> None:
    svc = services(1)[0]
    text = kpr.iptables_restore_text([svc], POD_CIDR)
    for ip, port in svc.endpoints:
        rules = ipt_rules(text, kpr.sep_chain(svc, (ip, port)))
        assert rules[0].startswith(f"-A {kpr.sep_chain(svc, (ip, port))} -s {ip}/32")
        assert rules[1].endswith(f"-j DNAT --to-destination {ip}:{port}")


def test_chain_names_follow_kube_proxys_hash_and_are_stable() -> None:
    a, b = services(2)
    assert re.fullmatch(r"SGTK-SVC-[A-Z2-7]{16}", kpr.svc_chain(a))
    assert kpr.svc_chain(a) != kpr.svc_chain(b)
    assert kpr.sep_chain(a, a.endpoints[0]) != kpr.sep_chain(b, a.endpoints[0])
    assert kpr.svc_chain(a) == kpr.svc_chain(services(2)[0])


def test_iptables_change_rewrites_one_service_and_swaps_one_endpoint_chain() -> None:
    old = services(5)[4]
    new = kpr.with_one_endpoint_changed(old, POOL)
    assert new.endpoints[:-1] == old.endpoints[:-1] and new.endpoints[-1] not in old.endpoints
    text = kpr.iptables_change_text(old, new, POD_CIDR)
    gone, added = kpr.sep_chain(old, old.endpoints[-1]), kpr.sep_chain(new, new.endpoints[-1])
    declared = [line[1:].split()[0] for line in text.splitlines() if line.startswith(":")]
    assert declared == [kpr.svc_chain(new), added, gone]  # declaring flushes under --noflush
    assert ipt_rules(text, gone) == [] and f"-X {gone}" in text.splitlines()
    assert len(ipt_rules(text, kpr.svc_chain(new))) == 11
    assert ipt_rules(text, added)[1].endswith(f"--to-destination {new.endpoints[-1][0]}:8080")
    assert kpr.IPT_SERVICES not in text  # the service list itself is untouched
    assert kpr.sep_chains_changed(old, new) == ([added], [gone])  # what the mode keeps track of
    assert kpr.sep_chains_changed(old, old) == ([], [])


def test_flushing_restore_keeps_the_builtin_chains_and_adds_our_jump() -> None:
    text = kpr.iptables_restore_text(services(3), POD_CIDR)
    full = kpr.iptables_flush_restore_text(text, "sgtK1c0").splitlines()
    assert full[:5] == ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]",
                        ":OUTPUT ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]"]
    jump = ('-A PREROUTING -i sgtK1c0 -m comment --comment "sgtK kube-proxy bench" '
            "-j SGTK-SERVICES")
    assert full[-2:] == [jump, "COMMIT"]
    assert full[5:-2] == text.splitlines()[1:-1]  # the same rules in between, unchanged
    assert kpr.iptables_jump_args("sgtK1c0") == [
        "PREROUTING", "-i", "sgtK1c0", "-m", "comment", "--comment", "sgtK kube-proxy bench",
        "-j", "SGTK-SERVICES"]


def test_declared_chains_are_what_removal_deletes() -> None:
    svcs = services(2)
    text = kpr.iptables_restore_text(svcs, POD_CIDR)
    chains = kpr.declared_chains(text)
    assert chains[:4] == [kpr.IPT_SERVICES, kpr.IPT_NODEPORTS, kpr.IPT_MARK_MASQ,
                          kpr.svc_chain(svcs[0])]
    assert len(chains) == 3 + 2 * (1 + kpr.ENDPOINTS_PER_SERVICE)
    removal = kpr.iptables_remove_text(chains).splitlines()
    assert [line[3:] for line in removal if line.startswith("-X ")] == chains


def test_iptables_remove_flushes_then_deletes_only_the_given_chains() -> None:
    chains = ["SGTK-SERVICES", "SGTK-SVC-AAAA"]
    lines = kpr.iptables_remove_text(chains).splitlines()
    assert lines == ["*nat", ":SGTK-SERVICES - [0:0]", ":SGTK-SVC-AAAA - [0:0]",
                     "-X SGTK-SERVICES", "-X SGTK-SVC-AAAA", "COMMIT"]


def test_our_chains_are_found_in_save_output_and_nobody_elses() -> None:
    saved = ("*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:SGTK-SERVICES - [0:0]\n"
             ":SGTK-SEP-ABC - [0:0]\n-A PREROUTING -j SGTK-SERVICES\nCOMMIT\n")
    assert kpr.our_iptables_chains(saved) == ["SGTK-SERVICES", "SGTK-SEP-ABC"]


@pytest.mark.parametrize("n", [pytest.param(1, id="one"), pytest.param(12, id="twelve")])
def test_nft_ruleset_has_the_service_map_and_numgen_per_service(n: int) -> None:
    svcs = services(n)
    text = kpr.nft_ruleset_text(svcs, "sgtK1c0", POD_CIDR)
    lines = text.splitlines()
    assert lines[0].startswith("add table ip sgtk_kp ")
    assert all(f" ip {kpr.NFT_TABLE} " in line for line in lines)
    assert ('add rule ip sgtk_kp nat-prerouting iifname "sgtK1c0" jump services') in lines
    assert any("type nat hook prerouting priority dstnat" in line for line in lines)
    assert "type ipv4_addr . inet_proto . inet_service : verdict" in text
    assert ("add rule ip sgtk_kp services ip daddr . meta l4proto . th dport vmap "
            "@service-ips") in lines
    elements = [line for line in lines if line.startswith("add element ip sgtk_kp service-ips")]
    assert [e.split("{ ")[1].split(" .")[0] for e in elements] == [s.vip for s in svcs]
    numgen = [line for line in lines if "numgen random mod 10 vmap" in line]
    assert len(numgen) == n
    for svc, rule in zip(svcs, numgen, strict=True):
        targets = re.findall(r"(\d+) : goto (\S+?)[,\s]", rule)
        assert targets == [(str(i), kpr.nft_endpoint_chain(svc, ep))
                           for i, ep in enumerate(svc.endpoints)]
    dnat = [line for line in lines if " dnat to " in line]
    assert len(dnat) == 10 * n
    # every chain a rule or element refers to is created before it is used
    created: set[str] = set()
    for line in lines:
        words = line.split()
        if words[:2] == ["add", "chain"]:
            created.add(words[4])
        for target in re.findall(r"goto (\S+?)(?:[,\s]|$)", line):
            assert target in created, target


def test_nft_change_is_one_transaction_for_one_endpoint() -> None:
    old = services(3)[1]
    new = kpr.with_one_endpoint_changed(old, POOL)
    lines = kpr.nft_change_text(old, new, POD_CIDR).splitlines()
    added = kpr.nft_endpoint_chain(new, new.endpoints[-1])
    gone = kpr.nft_endpoint_chain(old, old.endpoints[-1])
    svc = kpr.nft_service_chain(new)
    assert lines[0] == f"add chain ip sgtk_kp {added}"
    assert lines.index(f"flush chain ip sgtk_kp {svc}") < lines.index(
        f"delete chain ip sgtk_kp {gone}")
    assert lines[-1] == f"delete chain ip sgtk_kp {gone}"
    assert f"goto {added}" in next(line for line in lines if "numgen" in line)
    assert not any("service-ips" in line for line in lines)


@pytest.mark.parametrize(("pool", "message"), [
    pytest.param(POOL[:9], "needs 10", id="pool-too-small"),
])
def test_make_services_rejects_a_pool_too_small(pool: list[str], message: str) -> None:
    with pytest.raises(kpr.BenchError, match=message):
        kpr.make_services(3, ["172.29.0.1"] * 3, pool, tb.SERVER_PORT)


def test_every_service_gets_ten_distinct_endpoints() -> None:
    for svc in services(40):
        assert len({ip for ip, _ in svc.endpoints}) == 10


def test_endpoints_use_the_target_port_and_services_the_service_port() -> None:
    (svc,) = kpr.make_services(1, ["172.29.0.1"], POOL, 9090)
    assert {port for _, port in svc.endpoints} == {9090} and svc.port == 80
    text = kpr.iptables_restore_text([svc], POD_CIDR)
    assert ipt_rules(text, kpr.sep_chain(svc, svc.endpoints[0]))[1].endswith(
        f"--to-destination {svc.endpoints[0][0]}:9090")


def test_endpoint_change_needs_a_spare_address() -> None:
    svc = kpr.make_services(1, ["172.29.0.1"], POOL[:10], tb.SERVER_PORT)[0]
    with pytest.raises(kpr.BenchError, match="spare backend address"):
        kpr.with_one_endpoint_changed(svc, POOL[:10])


def test_rule_generators_import_nothing_that_touches_the_machine() -> None:
    code = ("import sys; import kube_proxy_rules; "
            "print(sorted({'testbed', 'subprocess', 'kube_proxy'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=BENCH, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


def test_plan_names_and_addresses() -> None:
    plan = tb.Plan("123")
    assert plan.client_ns == "sgtK-123-c0" and plan.client_if == "sgtK123c0"
    assert plan.client_ip == "172.29.255.1" and str(plan.vip_net) == "172.29.0.0/18"
    assert plan.backend_ips(1)[0] == "172.29.128.11"
    assert plan.vip(0) == "172.29.0.1" and plan.vip(16380) == "172.29.63.253"
    with pytest.raises(tb.TestbedError, match="does not fit"):
        plan.vip(16382)
    ns, links = plan.all_names()
    assert all(n.startswith("sgtK-123-") for n in ns)
    assert all(n.startswith("sgtK123") and len(n) <= 15 for n in links)


@pytest.mark.parametrize(("prefix", "match"), [
    pytest.param("172.29.0.0/24", "/16 or wider", id="too-narrow"),
    pytest.param("fd00::/16", "IPv4", id="ipv6"),
])
def test_plan_rejects_bad_prefixes(prefix: str, match: str) -> None:
    with pytest.raises(tb.TestbedError, match=match):
        tb.Plan("1", prefix)


def test_summary_takes_medians_and_renders_ratios() -> None:
    def rec(mode: str, rep: int, rate: float) -> object:
        r = kp.Record(mode, 100, rep, program_s=0.5 + rep, change_s=0.001)
        for run in ("first/connect", "first/rr", "last/connect", "last/rr"):
            r.runs[run] = {"rate": rate + rep, "p50_us": 10.0, "p99_us": 20.0,
                           "cpu_us_per_conn": 40.0 + rep}
        return r

    recs = [rec(m, i, base) for m, base in (("iptables-legacy", 1000.0), ("spyglass", 3000.0),
                                           ("direct", 4000.0)) for i in range(3)]
    summary = kp.summarize(recs)
    assert summary[("spyglass", 100)]["last/connect/rate"] == 3001.0
    assert summary[("iptables-legacy", 100)]["program_s"] == 1.5
    table = kp.render(summary, ["direct", "iptables-legacy", "spyglass"], [100])
    assert "| 100 | spyglass | 3.0k | 3.0k |" in table
    assert "| 100 | 3.00× |" in table  # 3001 / 1001


def test_client_source_compiles(tmp_path: Path) -> None:
    if not __import__("shutil").which("gcc"):
        pytest.skip("gcc not installed")
    tool = tb.build_tool(str(tmp_path))
    assert Path(tool).exists()
