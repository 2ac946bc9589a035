"""Datapath set-up errors that must read as instructions, checked without a kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from spyglass.bpf import datapath as dpmod
from spyglass.bpf.datapath import Datapath, DatapathError


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        pytest.param({"aggregation": "loud"}, ValueError, "unknown monitor aggregation level",
                     id="bad-level"),
        pytest.param({"interval_s": 0}, ValueError, "positive number of seconds",
                     id="zero-interval"),
        pytest.param({"ct_size": 10}, ValueError, "ct_size 10 must be", id="tiny-ct"),
    ],
)
def test_bad_arguments_fail_before_compiling(kwargs: dict[str, object], error: type,
                                             message: str) -> None:
    with pytest.raises(error, match=message):
        Datapath(pin_dir="/nonexistent/sgtA", **kwargs)  # type: ignore[arg-type]


def test_missing_headers_say_run_doctor_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dpmod.kernel, "probe_root", lambda: (True, "root"))
    monkeypatch.setattr(dpmod.kernel, "probe_bcc", lambda: (True, "bcc"))
    monkeypatch.setattr(dpmod.kernel, "probe_kernel_headers",
                        lambda: (False, "kernel headers not found for 9.9: run "
                                        "`spyglass doctor --fix`"))
    with pytest.raises(DatapathError, match="spyglass doctor --fix"):
        Datapath(pin_dir="/nonexistent/sgtA")


def test_not_root_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dpmod.kernel, "probe_root", lambda: (False, "the datapath needs root"))
    with pytest.raises(DatapathError, match="needs root"):
        Datapath(pin_dir="/nonexistent/sgtA")


def test_stale_pins_are_reported_with_the_way_out(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for probe in ("probe_root", "probe_bcc", "probe_kernel_headers"):
        monkeypatch.setattr(dpmod.kernel, probe, lambda: (True, "ok"))
    (tmp_path / "sg_ct").write_text("")
    with pytest.raises(DatapathError, match="sg_ct already pinned.*spyglass down"):
        Datapath(pin_dir=str(tmp_path))
