"""The concurrency gate: a fixed number inside, the rest refused at once with a retry hint."""

from __future__ import annotations

import pytest

from spyglass.api.errors import ApiError
from spyglass.api.gate import Gate


def test_the_gate_admits_its_slots_and_refuses_the_rest_with_retry_after() -> None:
    gate = Gate(2, "SQL queries", retry_after_s=3)
    with gate.enter(), gate.enter():
        assert gate.inside == 2
        with pytest.raises(ApiError) as err, gate.enter():
            pass
        assert err.value.status == 429 and err.value.headers == {"Retry-After": "3"}
        assert "2 SQL queries are already running" in err.value.message
    assert gate.inside == 0 and gate.refused == 1
    with gate.enter():
        assert gate.inside == 1


def test_a_failure_inside_frees_the_slot() -> None:
    gate = Gate(1, "things")
    with pytest.raises(RuntimeError), gate.enter():
        raise RuntimeError("boom")
    assert gate.inside == 0


def test_a_gate_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        Gate(0, "x")
