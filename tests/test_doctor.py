"""doctor: each check says what is missing and how to fix it, in plain words."""

from __future__ import annotations

import os

import pytest

from spyglass.cli import doctor


def test_headers_missing_names_kernel_and_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "_kernel", lambda: "9.9.9-test")
    monkeypatch.setattr(doctor, "_header_candidates",
                        lambda: ["/usr/src/linux-headers-6.1.0-56-amd64"])
    c = doctor.check_headers()
    assert c.status == doctor.MISSING
    assert c.detail == ("kernel headers not found for 9.9.9-test: "
                        "/lib/modules/9.9.9-test/build is missing")
    assert "spyglass doctor --fix" in c.fix and "linux-headers-6.1.0-56-amd64" in c.fix
    assert c.fixer is not None


@pytest.mark.parametrize(
    ("release", "status"),
    [pytest.param("6.18.44-fc", doctor.OK, id="new"),
     pytest.param("5.10.0", doctor.OK, id="minimum"),
     pytest.param("4.19.0", doctor.MISSING, id="too-old")],
)
def test_kernel_version(monkeypatch: pytest.MonkeyPatch, release: str, status: str) -> None:
    monkeypatch.setattr(doctor, "_kernel", lambda: release)
    assert doctor.check_kernel().status == status


def test_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    c = doctor.check_root()
    assert c.status == doctor.MISSING and c.fix == "run it with sudo"


def test_blocking_ignores_warnings_and_optional_checks() -> None:
    checks = [
        doctor.Check("a", doctor.OK, "fine"),
        doctor.Check("b", doctor.WARN, "meh", required=False),
        doctor.Check("c", doctor.MISSING, "gone", "fix it"),
        doctor.Check("d", doctor.MISSING, "optional", required=False),
    ]
    assert [c.name for c in doctor.blocking(checks)] == ["c"]


@pytest.mark.datapath
def test_every_check_passes_on_a_set_up_machine() -> None:
    bad = [c for c in doctor.run_checks() if c.status == doctor.MISSING]
    assert bad == []
