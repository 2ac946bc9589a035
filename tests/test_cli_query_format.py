"""`spyglass query` tables: identifiers print bare, amounts with thousands separators."""

from __future__ import annotations

import pandas as pd
import pytest

from spyglass.cli.query import is_identifier, render


def test_ports_identities_and_codes_print_bare_and_counts_grouped() -> None:
    df = pd.DataFrame({"dst_port": [8080], "source_identity": [16777217], "code": [133],
                       "connections": [12345], "events": [1234567], "bytes": [9876543]})
    text = render(df, "table")
    row = text.splitlines()[1].split()
    assert row == ["8080", "16777217", "133", "12,345", "1,234,567", "9,876,543"]
    assert "8,080" not in text


@pytest.mark.parametrize(("column", "bare"), [
    ("dst_port", True), ("port", True), ("destination_port", True), ("identity", True),
    ("icmp_type", True), ("cpu", True), ("flows", False), ("dropped", False),
    ("bytes", False), ("connections", False), ("report", False)])
def test_which_columns_are_identifiers(column: str, bare: bool) -> None:
    assert is_identifier(column) is bare
