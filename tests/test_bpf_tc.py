"""Recognising our tc filters: the rule that keeps cleanup off foreign filters."""

from __future__ import annotations

import pytest

from spyglass.bpf.tc import EGRESS_PARENT, INGRESS_PARENT, TcFilter, filter_name


@pytest.mark.parametrize(
    ("name", "ours"),
    [
        pytest.param(filter_name("from_container"), True, id="ours-ingress"),
        pytest.param("spyglass:to_container", True, id="ours-egress"),
        pytest.param("from_container", False, id="bare-program-name"),
        pytest.param("cil_from_container", False, id="cilium"),
        pytest.param("", False, id="unnamed"),
    ],
)
def test_ours_by_name(name: str, ours: bool) -> None:
    assert TcFilter(3, INGRESS_PARENT, 1, 0xC0000300, name).ours is ours


@pytest.mark.parametrize(
    ("parent", "hook"),
    [pytest.param(INGRESS_PARENT, "ingress", id="ingress"),
     pytest.param(EGRESS_PARENT, "egress", id="egress")],
)
def test_hook_names(parent: int, hook: str) -> None:
    assert TcFilter(3, parent, 1, 0, "x").hook == hook
