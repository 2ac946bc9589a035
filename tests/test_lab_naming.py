"""Pod references, workload names and link names."""

from __future__ import annotations

import pytest

from spyglass.lab.errors import PodRefError
from spyglass.lab.naming import host_ifname, netns_name, resolve_ref, workload_name

PODS = [("default", "web-0"), ("shop", "web-0"), ("shop", "cart-0"), ("ops", "cart-0"),
        ("ops", "loadgen-0")]


@pytest.mark.parametrize(("ref", "want"), [
    pytest.param("shop/web-0", ("shop", "web-0"), id="ns-slash-pod"),
    pytest.param("web-0", ("default", "web-0"), id="bare-in-default"),
    pytest.param("loadgen-0", ("ops", "loadgen-0"), id="bare-unique"),
    pytest.param(" ops/cart-0 ", ("ops", "cart-0"), id="whitespace-trimmed"),
])
def test_resolve(ref: str, want: tuple[str, str]) -> None:
    assert resolve_ref(ref, PODS) == want


def test_resolve_prefers_the_given_default_namespace() -> None:
    assert resolve_ref("cart-0", PODS, default_namespace="ops") == ("ops", "cart-0")


@pytest.mark.parametrize(("ref", "pattern"), [
    pytest.param("cart-0", r"ambiguous: it matches ops/cart-0, shop/cart-0; write 'namespace/pod'",
                 id="ambiguous-lists-candidates"),
    pytest.param("shop/kart-0", r"no pod 'shop/kart-0' in the lab; did you mean 'shop/cart-0'",
                 id="unknown-with-suggestion"),
    pytest.param("zzz", r"no pod named 'zzz' in the lab; pods are: default/web-0", id="unknown"),
    pytest.param("a/b/c", r"bad pod reference 'a/b/c'", id="too-many-slashes"),
    pytest.param("", r"bad pod reference ''", id="empty"),
])
def test_resolve_errors(ref: str, pattern: str) -> None:
    with pytest.raises(PodRefError, match=pattern):
        resolve_ref(ref, PODS)


def test_resolve_in_empty_lab() -> None:
    with pytest.raises(PodRefError, match=r"the lab has no pods"):
        resolve_ref("x", [])


@pytest.mark.parametrize(("pod", "labels", "want"), [
    pytest.param("frontend-1", {"app": "shop-web"}, "shop-web", id="app-label-wins"),
    pytest.param("frontend-1", {}, "frontend", id="ordinal"),
    pytest.param("cart-7d9f8b6c5-x2x7z", {}, "cart", id="deployment-hash"),
    pytest.param("agent-5x7lw", {}, "agent", id="daemonset-hash"),
    pytest.param("api-server", {}, "api-server", id="word-is-not-a-hash"),
    pytest.param("db", {"tier": "db"}, "db", id="no-suffix"),
])
def test_workload_name(pod: str, labels: dict[str, str], want: str) -> None:
    assert workload_name(pod, labels) == want


def test_host_ifname_fits_and_differs_by_prefix() -> None:
    a = host_ifname("lxc", "sg", "shop", "cart-0")
    b = host_ifname("lxc", "sgtB", "shop", "cart-0")
    assert a.startswith("lxc") and len(a) == 15 and a != b
    assert a == host_ifname("lxc", "sg", "shop", "cart-0")  # stable across runs
    assert netns_name("sg", "shop", "cart-0") == "sg-shop-cart-0"


def test_host_ifname_rejects_a_long_prefix() -> None:
    with pytest.raises(ValueError, match="too long"):
        host_ifname("averylonglink", "sg", "a", "b")
