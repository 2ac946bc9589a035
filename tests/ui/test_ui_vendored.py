"""Vendored libraries are exactly what ui/VENDORED.md records; the page loads only local files."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from spyglass.ui import static_dir

UI = Path(__file__).resolve().parents[2] / "ui"
VENDOR = UI / "static" / "vendor"


def _recorded() -> dict[str, str]:
    text = (UI / "VENDORED.md").read_text()
    return {path: digest for digest, path in re.findall(r"^([0-9a-f]{64})  (\S+)$", text, re.M)}


def test_every_vendored_file_is_recorded_with_its_hash() -> None:
    recorded = _recorded()
    on_disk = {str(p.relative_to(VENDOR)) for p in VENDOR.rglob("*") if p.is_file()}
    assert on_disk == set(recorded), "update ui/VENDORED.md when vendored files change"
    for path, digest in recorded.items():
        assert hashlib.sha256((VENDOR / path).read_bytes()).hexdigest() == digest, path


@pytest.mark.parametrize("lib", [pytest.param(d.name, id=d.name) for d in sorted(VENDOR.iterdir())])
def test_each_library_ships_its_licence(lib: str) -> None:
    assert (VENDOR / lib / "LICENSE").read_text().strip()


def test_index_loads_nothing_from_the_network() -> None:
    html = (UI / "static" / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and all(not re.match(r"^(https?:)?//", r) for r in refs), refs
    for ref in refs:
        if not ref.startswith(("data:", "?")):
            assert (UI / "static" / ref).is_file(), ref


def test_static_dir_is_the_folder_with_index_html() -> None:
    assert (Path(static_dir()) / "index.html").is_file()
