"""Running a user's `query sql`: canonicalise, vet, wrap, vet what runs, run it bounded.

The steps, each through the same ClickHouse connection that runs the query:

1. `formatQuerySingleLine` of the text, passed hex-encoded so that no quoting of
   ours is involved. It parses exactly one statement and prints it canonically
   (no comments, one way to quote); several statements or a syntax error are
   refused here, before anything could run. (chDB executes every statement of a
   multi-statement text, even after `EXPLAIN AST`, so this must come first.)
2. `EXPLAIN AST` of that statement, vetted by `sqlguard.vet` with clear reasons
   (FORMAT, SETTINGS, INTO OUTFILE, tables, functions).
3. The statement wrapped as `SELECT * FROM (…) LIMIT n`, checked again to be one
   statement and vetted again: this wrapped text is exactly what then runs.
4. Run with a row cap, a time limit, a memory limit and `readonly=1`.

Errors that come back from the server reach the user through `redact.public_error`.
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from spyglass.storage.redact import public_error
from spyglass.storage.sqlguard import MAX_SQL_CHARS, Catalog, SqlRefused, vet

#: Memory one user query may take in the agent's process (chDB runs in it).
MAX_QUERY_MEMORY = 2 << 30
_CATALOG_TTL_S = 5.0


class UserSql:
    """Vets and runs user SQL on one client (the caller serialises access to it)."""

    def __init__(self, client: Any, database: str) -> None:
        self._client = client
        self._database = database
        self._catalog: Catalog | None = None
        self._catalog_at = 0.0

    def prepare(self, text: str, limit: int) -> str:
        """The exact text to run for `text`, or SqlRefused with the reason."""
        if not isinstance(text, str) or not text.strip():
            raise SqlRefused("the query is empty; give one SELECT over flows or lost_events")
        if len(text) > MAX_SQL_CHARS:
            raise SqlRefused(f"the query is {len(text)} characters, over {MAX_SQL_CHARS}; "
                             "shorten it")
        if "\x00" in text:
            raise SqlRefused("the query contains a NUL byte; remove it")
        statement = self._format(text)
        first = statement.split(" ", 1)[0].upper()
        if first not in ("SELECT", "WITH", "("):
            raise SqlRefused(f"only SELECT queries are allowed, not {first}; start the query "
                             "with SELECT or WITH")
        catalog = self.catalog()
        vet(self._explain(statement), catalog)
        wrapped = f"SELECT * FROM ({statement}) LIMIT {int(limit)}"
        self._format(wrapped)  # still exactly one statement
        vet(self._explain(wrapped), catalog)
        return wrapped

    def run(self, text: str, *, limit: int, timeout_s: float) -> pd.DataFrame:
        wrapped = self.prepare(text, limit)
        settings = {"max_execution_time": float(timeout_s), "max_result_rows": int(limit),
                    "result_overflow_mode": "break", "max_memory_usage": MAX_QUERY_MEMORY,
                    "max_threads": 1, "os_thread_priority": 19, "readonly": 1}
        return self._client.query_df(wrapped, settings=settings)

    def catalog(self) -> Catalog:
        """Databases and our database's tables, re-read every few seconds."""
        now = time.monotonic()
        if self._catalog is None or now - self._catalog_at > _CATALOG_TTL_S:
            c = self._client
            databases = [r[0] for r in c.query("SELECT name FROM system.databases").result_rows]
            tables = [r[0] for r in c.query(
                "SELECT name FROM system.tables WHERE database = {d:String} UNION ALL "
                "SELECT name FROM system.dictionaries WHERE database = {d:String}",
                parameters={"d": self._database}).result_rows]
            self._catalog = Catalog(self._database,
                                    frozenset(str(d).lower() for d in databases),
                                    frozenset(str(t).lower() for t in tables))
            self._catalog_at = now
        return self._catalog

    def _format(self, text: str) -> str:
        try:
            rows = self._client.query(
                f"SELECT formatQuerySingleLine(unhex('{text.encode().hex()}'))").result_rows
        except Exception as exc:
            raise SqlRefused(_parse_error(exc)) from None
        return str(rows[0][0])

    def _explain(self, statement: str) -> list[str]:
        try:
            rows = self._client.query(f"EXPLAIN AST {statement}").result_rows
        except Exception as exc:
            raise SqlRefused(_parse_error(exc)) from None
        return [str(r[0]) for r in rows]


def _parse_error(exc: BaseException) -> str:
    text = str(exc)
    if "Multi-statements are not allowed" in text:
        return "only one statement is allowed: remove the ';' between statements"
    if "Empty query" in text:
        return "the query is empty; give one SELECT over flows or lost_events"
    return f"ClickHouse could not parse it: {public_error(text)}"
