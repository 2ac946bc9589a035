"""Datapath set-up errors that must read as instructions, checked without a kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from spyglass.bpf import datapath as dpmod
from spyglass.bpf.datapath import Datapath, DatapathError
from spyglass.bpf.pins import MapShape, PinError, check_definitions


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


def test_a_pin_dir_off_bpffs_says_how_to_mount_one(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for probe in ("probe_root", "probe_bcc", "probe_kernel_headers"):
        monkeypatch.setattr(dpmod.kernel, probe, lambda: (True, "ok"))
    with pytest.raises(DatapathError, match="not on a bpf filesystem: mount -t bpf"):
        Datapath(pin_dir=str(tmp_path))


def test_a_pinned_map_made_differently_is_refused_with_the_way_out() -> None:
    """bcc would reuse it silently; the agent must not run on maps of another shape."""
    wanted = {"sg_ct": MapShape(40, 48, 65536), "sg_config": MapShape(4, 16, 1)}
    actual = {"sg_ct": MapShape(40, 48, 131072), "sg_config": MapShape(4, 16, 1)}
    with pytest.raises(PinError, match=r"sg_ct \(131072 entries.*wants 65536.*spyglass down"):
        check_definitions(actual, wanted, "/sys/fs/bpf/spyglass")
    check_definitions(wanted, wanted, "/sys/fs/bpf/spyglass")  # the same shapes: adopted
