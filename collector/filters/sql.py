"""Helpers for the SQL form of filters: ClickHouse server-side parameters only.

Every user value travels as a typed parameter (`{f12:String}`), never as
SQL text, so a value like `'); DROP TABLE flows; --` is just a string the
query compares against. Parameter names come from one process-wide counter,
so fragments from any number of clauses and filters compose without
clashing. The column names are the flows table's (storage/schema.py), which
this layer cannot import; the store's tests check that both agree.
"""

from __future__ import annotations

import fnmatch
import itertools
import re
from collections.abc import Iterable
from typing import Any

Sql = tuple[str, dict[str, Any]]

_names = itertools.count()
#: Matches every row / no row, for empty compositions.
TRUE: Sql = ("1", {})
FALSE: Sql = ("0", {})


class Params:
    """Collects one fragment's parameters and hands out placeholders for them."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def add(self, value: Any, ch_type: str) -> str:
        name = f"f{next(_names)}"
        self.values[name] = value
        return f"{{{name}:{ch_type}}}"


def any_of(parts: Iterable[str]) -> str:
    items = [p for p in parts if p]
    if not items:
        return "0"
    return items[0] if len(items) == 1 else "(" + " OR ".join(f"({p})" for p in items) + ")"


def all_of(parts: Iterable[str]) -> str:
    items = [p for p in parts if p]
    if not items:
        return "1"
    return items[0] if len(items) == 1 else "(" + " AND ".join(f"({p})" for p in items) + ")"


def combine(fragments: Iterable[Sql], joiner: str) -> Sql:
    """AND/OR of fragments, merging their parameters (names never clash)."""
    texts: list[str] = []
    params: dict[str, Any] = {}
    for text, p in fragments:
        texts.append(text)
        params.update(p)
    return (all_of(texts) if joiner == "AND" else any_of(texts)), params


def glob_regex(pattern: str) -> str:
    """An RE2 regex (ClickHouse `match`) that accepts what `fnmatch` accepts.

    Python's own translation is reused for the parts between top-level `*`s
    (where it emits plain RE syntax that RE2 shares); only the `*` joins,
    which Python renders with lookaheads RE2 lacks, are rewritten.
    """
    runs: list[str] = []
    i, n, start = 0, len(pattern), 0
    while i < n:
        c = pattern[i]
        if c == "*":
            runs.append(pattern[start:i])
            start = i + 1
            i += 1
        elif c == "[":
            j = i + 1  # the same bracket scan as fnmatch.translate
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            i = j + 1 if j < n else i + 1
        else:
            i += 1
    runs.append(pattern[start:])
    body = ".*".join(_run_regex(r) for r in runs)
    return f"^(?s:{body})$"


def _run_regex(run: str) -> str:
    if not run:
        return ""
    text = fnmatch.translate(run)
    m = re.fullmatch(r"\(\?s:(.*)\)\\Z", text, re.S)
    if m is None:  # pragma: no cover - CPython's format has been stable since 3.6
        raise ValueError(f"cannot translate the glob {run!r} for SQL")
    # `(?!)` (an empty range never matches) has no RE2 form; an empty class does not parse.
    return m.group(1).replace("(?!)", "[^\\x00-\\x{10FFFF}]")
