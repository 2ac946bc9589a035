"""Vetting `spyglass query sql` on the tree ClickHouse's own parser prints.

A tokeniser of ours sees a different query from the server's whenever quoting rules
differ (`$$…$$` strings, nested comments, unicode), which is how the first guard was
bypassed. So the store asks ClickHouse: `formatQuerySingleLine` turns the text into
one canonical statement (refusing several statements and syntax errors without
running anything), and `EXPLAIN AST` prints the tree that the server will execute.
This module reads that printout strictly and walks it with allowlists:

- node kinds: those of a SELECT only (subqueries, joins, ARRAY JOIN, windows, CTEs).
  SETTINGS (`Set`), `* APPLY f` (its function is not printed), query parameters,
  EXPLAIN and any kind not listed here are refused;
- functions: `sqlfunctions.function_allowed`. A function where a table goes is a
  table function (`file`, `url`, `numbers`, `python`…) and always refused;
- tables: `flows` and `lost_events` of Spyglass's database, and names that are not a
  table there at all, which ClickHouse can only resolve to a CTE of the query or
  refuse as unknown;
- identifiers: nothing qualified by a database but ours, and no name of another of
  our tables (`x IN schema_version` reads a table).

Each line is checked on its own, so the printout cannot be gamed: a quoted alias may
hold newlines that print as extra lines, but it cannot remove or rename a real node's
line, and every line is checked. The structure (indentation and printed child counts)
must also add up, and whatever does not read cleanly is refused: the guard fails
closed. What it refuses names the clause and the reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from spyglass.storage.schema import QUERYABLE_TABLES
from spyglass.storage.sqlfunctions import function_allowed

#: The most text `query sql` takes, and the deepest tree it vets.
MAX_SQL_CHARS = 20_000
MAX_AST_LINES = 20_000

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_NAME = re.compile(rf"{_IDENT}(?:\.{_IDENT})*")
_PLAIN = re.compile(_IDENT)
_SUFFIX = re.compile(r"(?: \(alias (?P<alias>[^()]*)\))?(?: \(children (?P<n>[0-9]+)\))?")
_KIND = re.compile(r"(?P<kind>[A-Za-z]+(?:::[A-Za-z]+)?)(?P<rest>.*)", re.S)
_SAMPLE = re.compile(r" [0-9]+(?: / [0-9]+)?")
_INTERPOLATE = re.compile(rf" \(column {_IDENT}\)")

#: Kinds whose line is only the kind (and alias, children).
_STRUCTURE = frozenset("""
    SelectWithUnionQuery SelectIntersectExceptQuery SelectQuery ExpressionList
    TablesInSelectQuery TablesInSelectQueryElement TableExpression TableJoin ArrayJoin
    Subquery Asterisk QualifiedAsterisk ColumnsListMatcher QualifiedColumnsListMatcher
    ColumnsRegexpMatcher QualifiedColumnsRegexpMatcher ColumnsTransformerList
    ColumnsExceptTransformer ColumnsReplaceTransformer ColumnsReplaceTransformer::Replacement
    OrderByElement WithElement WindowDefinition WindowListElement
""".split())
_NAMED = frozenset({"Function", "Identifier", "TableIdentifier"})
#: Kinds refused outright, with why.
_REFUSED = {
    "Set": "SETTINGS is not allowed: the server sets this query's limits (rows, time, memory)",
    "ColumnsApplyTransformer": "APPLY is not allowed (it hides which function runs); "
                               "call the function on the columns by name",
    "QueryParameter": "query parameters ({name:Type}) are not supported here; write the "
                      "values into the query",
    "Explain": "EXPLAIN is not allowed; give one SELECT over flows or lost_events",
}
_ONLY = "query flows or lost_events"
_QUERYABLE = frozenset(QUERYABLE_TABLES)


class SqlRefused(ValueError):
    """The text is not a single read-only SELECT over the flows tables."""


@dataclass(frozen=True)
class Catalog:
    """What the server holds right now, so that nothing but the two tables is reachable.

    `database` is the connection's current database (Spyglass's): unqualified table
    names resolve there. `databases` are every database's name and `tables` every
    table, view and dictionary of `database`, all lowercased: a name that matches one
    in any case is refused.
    """

    database: str
    databases: frozenset[str]
    tables: frozenset[str]


@dataclass(frozen=True, slots=True)
class AstLine:
    """One node of the printout: its depth, kind, name (if any), alias and children."""

    number: int
    depth: int
    kind: str
    name: str | None
    alias: str | None
    children: int


def parse_explain(lines: Sequence[str]) -> list[AstLine]:
    """Read `EXPLAIN AST` output strictly; SqlRefused if any line or count does not add up."""
    if not lines:
        raise SqlRefused("ClickHouse printed no parse for this query; rewrite it as one SELECT")
    if len(lines) > MAX_AST_LINES:
        raise SqlRefused(f"the query is too large to vet ({len(lines)} parse nodes, at most "
                         f"{MAX_AST_LINES}); simplify it")
    nodes: list[AstLine] = []
    stack: list[int] = []  # indexes of the open ancestors
    counts: list[int] = []
    for number, raw in enumerate(lines, start=1):
        node = _parse_line(number, raw)
        if (number == 1) != (node.depth == 0) or node.depth > len(stack):
            raise _unreadable(number)
        del stack[node.depth:]
        if stack:
            counts[stack[-1]] += 1
        nodes.append(node)
        counts.append(0)
        stack.append(len(nodes) - 1)
    for node, seen in zip(nodes, counts, strict=True):
        if node.children != seen:
            raise _unreadable(node.number)
    return nodes


def _unreadable(number: int) -> SqlRefused:
    return SqlRefused(f"the server's parse of this query could not be read back (line "
                      f"{number}); use plain names (letters, digits, _) for columns and "
                      "aliases, without quotes")


def _parse_line(number: int, raw: str) -> AstLine:
    text = raw.rstrip("\n")
    body = text.lstrip(" ")
    depth = len(text) - len(body)
    m = _KIND.fullmatch(body)
    if m is None:
        raise _unreadable(number)
    kind, rest = m.group("kind"), m.group("rest")
    if kind in _REFUSED:
        raise SqlRefused(_REFUSED[kind])
    name: str | None = None
    if kind in _NAMED:
        found = re.match(rf" ({_NAME.pattern})", rest)
        if found is None:
            raise _unreadable(number)
        name, rest = found.group(1), rest[found.end():]
    elif kind == "Literal":
        rest = _skip_literal(number, rest)
    elif kind == "SampleRatio":
        rest = _skip(number, _SAMPLE, rest)
    elif kind == "InterpolateElement":
        rest = _skip(number, _INTERPOLATE, rest)
    elif kind not in _STRUCTURE:
        raise SqlRefused(f"the query uses {kind}, which `query sql` does not allow; "
                         f"rewrite it as a plain SELECT and {_ONLY}")
    suffix = _SUFFIX.fullmatch(rest)
    if suffix is None:
        raise _unreadable(number)
    alias = suffix.group("alias")
    if alias is not None and not _PLAIN.fullmatch(alias):
        raise _unreadable(number)
    return AstLine(number, depth, kind, name, alias, int(suffix.group("n") or 0))


def _skip(number: int, pattern: re.Pattern[str], rest: str) -> str:
    m = pattern.match(rest)
    if m is None:
        raise _unreadable(number)
    return rest[m.end():]


def _skip_literal(number: int, rest: str) -> str:
    """Past a printed literal: 'text', NULL, or Type_value (arrays and tuples nest)."""
    if not rest.startswith(" ") or len(rest) < 2:
        raise _unreadable(number)
    i, depth, quoted = 1, 0, False
    head = rest[1]
    if head != "'" and not re.match(r"NULL\b|[A-Za-z][A-Za-z0-9]*_", rest[1:]):
        raise _unreadable(number)
    while i < len(rest):
        c = rest[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == "'":
                quoted = False
                if depth == 0 and head == "'":
                    return rest[i + 1:]
        elif c == "'":
            quoted = True
        elif c in "[(":
            depth += 1
        elif c in "])":
            depth -= 1
            if depth < 0:
                raise _unreadable(number)
        elif c == " " and depth == 0:
            return rest[i:]
        i += 1
    if quoted or depth:
        raise _unreadable(number)
    return ""


def vet(lines: Sequence[str], catalog: Catalog, *, client_format: str | None = "Native"
        ) -> list[AstLine]:
    """Refuse (SqlRefused) unless the printed tree reads only the flows tables.

    `client_format` is the FORMAT the client library appends to every query it sends
    (clickhouse-connect: Native); it is the only FORMAT accepted, at the top.
    """
    nodes = parse_explain(lines)
    root = nodes[0]
    if root.kind != "SelectWithUnionQuery":
        raise SqlRefused(f"only SELECT queries are allowed; {_ONLY}")
    _top_level(nodes, client_format)
    for i, node in enumerate(nodes):
        if node.kind == "Function":
            assert node.name is not None
            parent = _parent(nodes, i)
            if parent is not None and parent.kind == "TableExpression":
                raise SqlRefused(f"the table function {node.name}() is not allowed: it reads "
                                 f"outside the flows tables; {_ONLY} by name")
            if not function_allowed(node.name):
                raise SqlRefused(f"the function {node.name}() is not allowed: `query sql` "
                                 "offers computations over flows and lost_events only (see "
                                 "docs/storage.md for the list)")
        elif node.kind == "TableIdentifier":
            assert node.name is not None
            _check_table(node.name, catalog)
        elif node.kind == "Identifier":
            assert node.name is not None
            _check_identifier(node.name, catalog)
    return nodes


def _parent(nodes: Sequence[AstLine], i: int) -> AstLine | None:
    depth = nodes[i].depth
    for j in range(i - 1, -1, -1):
        if nodes[j].depth == depth - 1:
            return nodes[j]
    return None


def _top_level(nodes: Sequence[AstLine], client_format: str | None) -> None:
    """The root's children: the query, then only the client's own FORMAT.

    INTO OUTFILE prints as a Literal child of the root, FORMAT as an Identifier one.
    """
    top = [n for n in nodes if n.depth == 1]
    if not top or top[0].kind != "ExpressionList":
        raise SqlRefused(f"only SELECT queries are allowed; {_ONLY}")
    for n, node in enumerate(top[1:], start=2):
        if node.kind == "Literal":
            raise SqlRefused("INTO OUTFILE is not allowed: the agent would write the file; "
                             "save results with --out FILE")
        last = n == len(top)
        if node.kind == "Identifier" and last and client_format and node.name == client_format:
            continue
        if node.kind == "Identifier":
            raise SqlRefused("FORMAT is not allowed; choose the output with -o "
                             "(table, json, csv) or --out FILE.parquet")
        raise SqlRefused(f"the clause {node.kind} is not allowed; give one SELECT and {_ONLY}")


def _check_table(name: str, catalog: Catalog) -> None:
    parts = name.split(".")
    if len(parts) == 1:
        if parts[0].lower() in catalog.tables and parts[0].lower() not in _QUERYABLE:
            raise SqlRefused(f"the table {name} is not allowed; {_ONLY}")
        return  # flows, lost_events, or no table of ours: a CTE, or unknown to ClickHouse
    if len(parts) == 2 and parts[0] == catalog.database and parts[1] in QUERYABLE_TABLES:
        return
    if parts[0].lower() in catalog.databases or len(parts) == 2:
        raise SqlRefused(f"the table {name} is not allowed: only flows and lost_events of the "
                         f"database {catalog.database} are; {_ONLY}")
    raise SqlRefused(f"the table name {name} is not allowed; {_ONLY}")


def _check_identifier(name: str, catalog: Catalog) -> None:
    """A column (maybe table-qualified), an alias, a lambda argument, or IN's table."""
    parts = name.split(".")
    head = parts[0]
    if head.lower() in catalog.databases:
        if head == catalog.database and len(parts) >= 2 and parts[1] in QUERYABLE_TABLES:
            return
        raise SqlRefused(f"{name} names the database {head}, which is not allowed; {_ONLY}")
    if head.lower() in catalog.tables and head.lower() not in _QUERYABLE:
        raise SqlRefused(f"{name} names the table {head}, which is not allowed; {_ONLY}")
