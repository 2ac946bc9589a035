"""The Lab before it is up: planning, pod lookup, enrichment getters, placeholders. No kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from spyglass.lab.errors import LabError, PodRefError
from spyglass.lab.lab import Lab
from spyglass.lab.manifest import load_manifest, parse_documents, parse_manifest
from spyglass.model.getters import EndpointGetter, IdentityGetter
from spyglass.model.identity import IdentityAllocator
from spyglass.model.services import ClusterIPAllocator

DEMO = Path(__file__).resolve().parents[1] / "lab" / "manifests" / "demo.yaml"


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(load_manifest(DEMO), pod_cidr="10.244.0.0/16", prefix="sgtB",
               state_dir=str(tmp_path), python="/venv/bin/python")


def test_plan_is_deterministic_and_unique(lab: Lab, tmp_path: Path) -> None:
    pods = lab.pods
    assert [p.ep_id for p in pods] == list(range(1, len(pods) + 1))
    assert pods[0].ip == "10.244.0.2" and len({p.ip for p in pods}) == len(pods)
    assert len({p.host_ifname for p in pods}) == len(pods)
    assert all(len(p.host_ifname) <= 15 and p.netns.startswith("sgtB-") for p in pods)
    again = Lab(load_manifest(DEMO), prefix="sgtB", state_dir=str(tmp_path))
    assert [(p.ip, p.identity, p.host_ifname) for p in again.pods] == \
        [(p.ip, p.identity, p.host_ifname) for p in pods]
    assert not lab.is_up and all(p.pid == 0 and p.host_ifindex == 0 for p in pods)


def test_same_labels_share_an_identity(lab: Lab) -> None:
    f0, f1, cart = lab.pod("shop/frontend-0"), lab.pod("shop/frontend-1"), lab.pod("cart-0")
    assert f0.identity == f1.identity != cart.identity
    assert "k8s:io.kubernetes.pod.namespace=shop" in cart.identity_labels
    assert "k8s:io.cilium.k8s.namespace.labels.team=storefront" in cart.identity_labels
    assert lab.labels_of(cart.identity) == cart.identity_labels


def test_getters(lab: Lab) -> None:
    getter: EndpointGetter = lab
    ident: IdentityGetter = lab
    cart = lab.pod("shop/cart-0")
    info = getter.endpoint_by_ip(cart.ip)
    assert info is not None
    assert (info.id, info.namespace, info.pod_name, info.ips, info.ifname) == (
        cart.ep_id, "shop", "cart-0", (cart.ip,), cart.host_ifname)
    assert info.workloads[0].name == "cart" and info.workloads[0].kind == "Deployment"
    assert getter.endpoint_by_id(cart.ep_id) == info
    assert getter.endpoint_by_ip("10.9.9.9") is None and getter.endpoint_by_id(999) is None
    assert ident.labels_of(2) == ("reserved:world",)
    assert ident.labels_of(424242) is None


def test_shared_identity_allocator(tmp_path: Path) -> None:
    alloc = IdentityAllocator()
    lab = Lab(load_manifest(DEMO), state_dir=str(tmp_path), identities=alloc)
    assert alloc.labels_of(lab.pods[0].identity) == lab.pods[0].identity_labels


def test_pod_refs(lab: Lab) -> None:
    assert lab.pod("monitor-0").ref == "ops/monitor-0"
    with pytest.raises(PodRefError, match="no pod named 'nope'"):
        lab.pod("nope")


def test_ambiguous_pod_ref(tmp_path: Path) -> None:
    text = "\n---\n".join(
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: web-0, namespace: {ns}}}\n"
        f"spec: {{containers: [{{command: [x]}}]}}" for ns in ("a", "b"))
    lab = Lab(parse_manifest(text), state_dir=str(tmp_path))
    with pytest.raises(PodRefError, match="matches a/web-0, b/web-0"):
        lab.pod("web-0")


def test_render_argv_fills_placeholders(lab: Lab) -> None:
    m = lab.manifest
    fe = m.pod("shop/frontend-0")
    argv = lab.render_argv(fe, fe.containers[0])
    assert argv[0] == "/venv/bin/python" and "frontend-0" in argv
    # The demo's pods talk through Services: {{svc:…}} is the ClusterIP.
    assert f"http://{lab.services.cluster_ips['shop/cart']}/api/cart" in argv
    assert f"{lab.services.cluster_ips['ops/statsd']}:8125" in argv
    assert not any("{{" in a for a in argv)


def test_demo_services_have_backends_and_resolve_for_enrichment(lab: Lab) -> None:
    entries = {(e.namespace, e.name): e for e in lab.service_entries()}
    assert set(entries) == {("shop", "frontend"), ("shop", "cart"), ("shop", "catalog"),
                            ("shop", "db"), ("ops", "statsd")}
    fe = entries[("shop", "frontend")]
    assert sorted(fe.backends) == sorted((lab.pod(f"shop/frontend-{i}").ip, 8080)
                                         for i in (0, 1))
    assert entries[("shop", "cart")].affinity
    statsd = entries[("ops", "statsd")]
    assert (statsd.proto, statsd.port, statsd.backends) == (
        17, 8125, ((lab.pod("ops/monitor-0").ip, 8125),))
    for e in entries.values():
        assert e.vip.startswith("10.") and lab.service_by_id(e.service_id).name == e.name
        assert lab.service_by_addr(e.vip, e.port).namespace == e.namespace


@pytest.mark.parametrize(("kwargs", "pattern"), [
    pytest.param({"prefix": "sg/x"}, r"bad lab prefix 'sg/x'", id="prefix-slash"),
    pytest.param({"prefix": ""}, r"bad lab prefix ''", id="prefix-empty"),
    pytest.param({"pod_cidr": "10.0.0.0/29"}, r"room for 5 pods but the manifest has 7",
                 id="cidr-too-small"),
])
def test_bad_options(tmp_path: Path, kwargs: dict[str, str], pattern: str) -> None:
    with pytest.raises(LabError, match=pattern):
        Lab(load_manifest(DEMO), state_dir=str(tmp_path), **kwargs)  # type: ignore[arg-type]


def test_down_before_up_is_a_noop(lab: Lab) -> None:
    assert lab.down() == []
    assert lab.down() == []


def test_a_reloaded_lab_keeps_every_service_address(tmp_path: Path) -> None:
    """The stored documents carry the ClusterIPs that were allocated, so an agent or a
    `lab add` that loads the lab again gives each Service the address its clients already
    use. Two names that hash to one address in a /29: the second probes past the first;
    with the first deleted, a fresh plan would move the second onto the freed address."""
    cidr = "10.96.0.0/29"
    first_choice = {n: ClusterIPAllocator(cidr).allocate(f"shop/{n}") for n in
                    (f"svc-{i}" for i in range(40))}
    a, b = next((x, y) for x in first_choice for y in first_choice
                if x < y and first_choice[x] == first_choice[y])
    lab = Lab(parse_manifest("", "empty"), prefix="sgtB", state_dir=str(tmp_path),
              service_cidr=cidr)
    for name in (a, b):
        lab.apply_services(f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, "
                           "namespace: shop}\nspec:\n  selector: {app: x}\n"
                           "  ports: [{port: 80}]\n")
    lab.delete_service(f"shop/{a}")
    before = dict(lab.services.cluster_ips)
    assert before[f"shop/{b}"] != first_choice[b]
    again = Lab(parse_documents(lab.documents(), "reload"), prefix="sgtB",
                state_dir=str(tmp_path), service_cidr=cidr)
    assert again.services.cluster_ips == before
