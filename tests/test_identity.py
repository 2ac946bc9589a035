"""Identities: the same labels always give the same number, in any run."""

from __future__ import annotations

import pytest

from spyglass.model.identity import MIN_IDENTITY, IdentityAllocator, pod_labels


def test_same_labels_same_identity_across_allocators() -> None:
    labels = pod_labels("shop", {"app": "cart", "tier": "api"})
    assert IdentityAllocator().allocate(labels) == IdentityAllocator().allocate(labels)


def test_label_order_does_not_matter() -> None:
    a = IdentityAllocator()
    assert a.allocate(["k8s:b=2", "k8s:a=1"]) == a.allocate(["k8s:a=1", "k8s:b=2"])


def test_namespace_is_part_of_the_identity() -> None:
    a = IdentityAllocator()
    shop, ops = pod_labels("shop", {"app": "x"}), pod_labels("ops", {"app": "x"})
    assert a.allocate(shop) != a.allocate(ops)


def test_pod_labels_carry_the_namespace_label() -> None:
    assert pod_labels("shop", {"app": "cart"}) == (
        "k8s:app=cart", "k8s:io.kubernetes.pod.namespace=shop")


def test_labels_of_and_reserved() -> None:
    a = IdentityAllocator()
    n = a.allocate(["k8s:app=x"])
    assert n >= MIN_IDENTITY
    assert a.labels_of(n) == ("k8s:app=x",)
    assert a.labels_of(1) == ("reserved:host",)
    assert a.labels_of(2) == ("reserved:world",)
    assert a.labels_of(99) is None


def test_collisions_are_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    import spyglass.model.identity as ident

    monkeypatch.setattr(ident, "MAX_IDENTITY", ident.MIN_IDENTITY + 1)  # a space of two
    a = IdentityAllocator()
    got = {a.allocate([f"k8s:n={i}"]) for i in range(2)}
    assert got == {ident.MIN_IDENTITY, ident.MIN_IDENTITY + 1}


def test_empty_label_set_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one label"):
        IdentityAllocator().allocate([])
