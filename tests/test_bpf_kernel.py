"""Feature probes answer in words a user can act on."""

from __future__ import annotations

from pathlib import Path

import pytest

from spyglass.bpf import kernel


def test_missing_headers_point_at_doctor_fix() -> None:
    ok, detail = kernel.probe_kernel_headers("0.0.0-sgtA-nonexistent")
    assert not ok
    assert "kernel headers not found for 0.0.0-sgtA-nonexistent" in detail
    assert "spyglass doctor --fix" in detail


def test_bpffs_probe_names_the_mount_command(tmp_path: Path) -> None:
    ok, detail = kernel.probe_bpffs(str(tmp_path))
    assert not ok and "mount -t bpf" in detail


@pytest.mark.parametrize(
    "probe",
    [pytest.param(kernel.probe_root, id="root"), pytest.param(kernel.probe_bcc, id="bcc"),
     pytest.param(kernel.probe_btf, id="btf"), pytest.param(kernel.probe_bpffs, id="bpffs")],
)
def test_probes_return_a_verdict_and_a_sentence(probe: object) -> None:
    ok, detail = probe()  # type: ignore[operator]
    assert isinstance(ok, bool) and detail and detail[0].islower()
