"""Every filter flag is documented: docs/filters.md must name each one (and its short alias)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spyglass.collector.filters import FILTER_FLAGS, FilterFlag

DOC = Path(__file__).resolve().parent.parent / "docs" / "filters.md"


def _documented() -> set[str]:
    return set(re.findall(r"`(--?[a-z0-9][a-z0-9-]*)", DOC.read_text()))  # -4, --ipv4 too


@pytest.mark.parametrize("flag", [pytest.param(f, id=f.name) for f in FILTER_FLAGS])
def test_flag_is_documented(flag: FilterFlag) -> None:
    names = _documented()
    assert f"--{flag.name}" in names, f"docs/filters.md does not mention `--{flag.name}`"
    if flag.short:
        assert f"-{flag.short}" in names, f"docs/filters.md does not mention `-{flag.short}`"


def test_every_flag_has_help_and_example() -> None:
    for flag in FILTER_FLAGS:
        assert flag.help.endswith("."), flag.name
        assert flag.example or not flag.takes_value, flag.name
