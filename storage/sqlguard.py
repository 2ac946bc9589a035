"""Vetting `spyglass query sql` text: one SELECT over the flows tables, nothing else.

The check is deliberately conservative and works on tokens, not on a full
grammar: anything it cannot vouch for is refused with the reason, and the
store runs what passes with `readonly=1`, a row cap and a time limit as a
second line of defence. Refused: more than one statement, any statement
but SELECT/WITH … SELECT, any table other than flows and lost_events (a
table after FROM/JOIN/IN must be one of those, a subquery, or a CTE named in
the query), table functions, system tables, dictionaries and output
redirection.
"""

from __future__ import annotations

import re

from spyglass.storage.schema import QUERYABLE_TABLES

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      | (?P<comment>--[^\n]*|\#[^\n]*|/\*.*?\*/)
      | (?P<string>'(?:[^'\\]|\\.|'')*')
      | (?P<quoted>"(?:[^"\\]|\\.|"")*"|`(?:[^`\\]|\\.|``)*`)
      | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
      | (?P<number>\d[\w.]*)
      | (?P<param>\{[^}]*\})
      | (?P<op>.)""", re.X | re.S)

#: Statement keywords that are never part of a SELECT.
_FORBIDDEN_WORDS = frozenset("""
    insert alter create drop truncate delete update rename attach detach optimize grant revoke
    kill system set use exchange undrop backup restore move outfile infile into
    """.split())
#: Functions that read outside the flows tables or the server's state.
_FORBIDDEN_FUNCTIONS = re.compile(
    r"^(file|url|remote|remotesecure|cluster|clusterallreplicas|s3|s3cluster|gcs|azureblobstorage"
    r"|hdfs|hdfscluster|mysql|postgresql|sqlite|mongodb|redis|jdbc|odbc|input|executable|numbers"
    r"|generaterandom|merge|view|viewifpermitted|dictionary|dictget\w*|dicthas|dictisin"
    r"|joinget\w*|getsetting|currentuser|currentprofiles|currentroles|enabledprofiles|hostname"
    r"|fqdn|getmacro|filesystem\w*|uptime|version|displayname|getserverport|tcpport"
    r"|deltalake|hudi|iceberg\w*|loop|format|null|values|zeros\w*|primes|fuzzjson|fuzzquery)$")
_TABLE_SPOTS = frozenset({"from", "join"})


class SqlRefused(ValueError):
    """The text is not a single read-only SELECT over the flows tables."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "op"
        if kind in ("ws", "comment"):
            continue
        out.append((kind, m.group()))
    return out


def _unquote(kind: str, value: str) -> str:
    return value[1:-1] if kind == "quoted" else value


def check_select(text: str) -> str:
    """The query text, stripped of a trailing ';', or SqlRefused naming the reason."""
    if not isinstance(text, str) or not text.strip():
        raise SqlRefused("the query is empty; give one SELECT over flows or lost_events")
    if "\x00" in text:
        raise SqlRefused("the query contains a NUL byte; remove it")
    toks = _tokens(text)
    while toks and toks[-1] == ("op", ";"):
        toks.pop()
    if not toks:
        raise SqlRefused("the query is empty; give one SELECT over flows or lost_events")
    if any(t == ("op", ";") for t in toks):
        raise SqlRefused("only one statement is allowed: remove the ';' between statements")
    first = toks[0][1].lower()
    if first not in ("select", "with", "("):
        raise SqlRefused(f"only SELECT queries are allowed, not {toks[0][1].upper()}; "
                         "start the query with SELECT or WITH")
    ctes = {toks[i - 1][1].lower() for i in range(1, len(toks) - 2)
            if toks[i][1].lower() == "as" and toks[i + 1] == ("op", "(")
            and toks[i - 1][0] in ("word", "quoted")}
    allowed = set(QUERYABLE_TABLES) | ctes
    for i, (kind, value) in enumerate(toks):
        low = value.lower()
        if kind == "param":
            raise SqlRefused("query parameters ({name:Type}) are not supported here; "
                             "write the values into the query")
        if kind == "word" and low in _FORBIDDEN_WORDS:
            raise SqlRefused(f"{value.upper()} is not allowed: this is a read-only SELECT "
                             "over flows and lost_events")
        if kind == "word" and low == "format" and i > 0:
            raise SqlRefused("FORMAT is not allowed; choose the output format with -o")
        if kind in ("word", "quoted") and low in ("system", "information_schema") and i + 1 < \
                len(toks) and toks[i + 1] == ("op", "."):
            raise SqlRefused(f"{value}.* tables are not allowed; query flows or lost_events")
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if kind in ("word", "quoted") and nxt == ("op", "(") and \
                _FORBIDDEN_FUNCTIONS.match(_unquote(kind, value).lower()):
            raise SqlRefused(f"the function {value}() is not allowed: it reads outside the "
                             "flows tables")
        if kind == "word" and low in _TABLE_SPOTS | {"in"}:
            if low == "join" and i > 0 and toks[i - 1][1].lower() == "array":
                continue  # ARRAY JOIN takes a column, not a table
            _check_table(toks, i + 1, value.upper(), allowed, low == "in")
    return text.strip().rstrip(";").strip()


def _check_table(toks: list[tuple[str, str]], j: int, after: str, allowed: set[str],
                 is_in: bool) -> None:
    if j >= len(toks):
        raise SqlRefused(f"nothing after {after}; name flows or lost_events")
    kind, value = toks[j]
    if value == "(":
        return  # a subquery (or an IN list): its own FROMs are checked too
    if is_in:
        if kind in ("string", "number"):
            return
        raise SqlRefused(f"IN {value} would read another table; use IN (…) with values or a "
                         "subquery over flows")
    name = _unquote(kind, value).lower()
    end = j + 1
    if j + 2 < len(toks) and toks[j + 1] == ("op", "."):  # database.table
        db = name
        name = _unquote(*toks[j + 2]).lower()
        end = j + 3
        if db != "spyglass":
            raise SqlRefused(f"the database {db!r} is not allowed; query flows or lost_events")
    if kind not in ("word", "quoted") or name not in allowed:
        raise SqlRefused(f"the table {value!r} is not allowed; query flows or lost_events")
    if end < len(toks) and toks[end] == ("op", "("):
        raise SqlRefused(f"{value}(…) is a table function; query the flows tables by name")
