"""`FlowStore`: the flows tables in ClickHouse, through clickhouse-connect only.

One code path serves both targets: `chdb:///abs/path` (embedded, in this
process; a path admits ONE process, so the `up` process owns it and
everything else goes through the API) and `http(s)://user:pass@host:8123/db`
(a server, or a cluster whose tables were made with `ddl(cluster=…)`).
Opening creates or migrates the schema and records it in `schema_version`.
Every query takes filters and bounds as server-side parameters.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from spyglass.collector.filters.filterset import FilterSet
from spyglass.collector.filters.sql import Params, all_of
from spyglass.model.flow import Flow, LostEvent
from spyglass.storage import queries
from spyglass.storage.redact import public_error, redact_dsn
from spyglass.storage.rows import lost_to_arrow, table_to_flows, table_to_lost, with_keep_until
from spyglass.storage.schema import (
    DEFAULT_DATABASE,
    DEFAULT_RETENTION_DAYS,
    FLOW_COLUMNS,
    FLOW_SCHEMA,
    FLOWS,
    KEEP_UNTIL,
    LOST_EVENTS,
    MAX_IMPORT_RETENTION_DAYS,
    SCHEMA_VERSION,
    SCHEMA_VERSION_TABLE,
    TABLES,
    migrations,
    ttl_clause,
    version_table_ddl,
)
from spyglass.storage.sqlguard import SqlRefused
from spyglass.storage.usersql import UserSql

#: (time_ns, uuid) of the last flow of a page: the next page starts after it.
Cursor = tuple[int, str]
_TTL = re.compile(r"\bTTL\s+(.*?)(?:\s+SETTINGS\s|$)", re.S)
_SELECT = ", ".join(f"`{c.name}`" for c in FLOW_COLUMNS)
MAX_LIMIT = 1_000_000


def ttl_days(ttl: str, keep_column: str | None) -> int | None:
    """The retention of a TTL that `ttl_clause` wrote (as the server normalised it), or
    None for any other TTL, which `open` replaces and an import refuses to trust."""
    days = r"(?:toIntervalDay\((\d+)\)|INTERVAL (\d+) DAY)"
    base = rf"toDateTime\(time\) \+ {days}"
    m = re.fullmatch(rf"greatest\({base}, {keep_column}\)" if keep_column else base, ttl.strip())
    return int(m.group(1) or m.group(2)) if m else None


class StoreError(RuntimeError):
    """The store cannot do what was asked. The message says what is wrong and what to do."""


class ImportNotKept(StoreError):
    """An import the store would not keep (refused before inserting) or did not keep."""


@dataclass(frozen=True, slots=True)
class Imported:
    """What `insert_imported` stored: every row, found again, kept until `kept_until_s`."""

    rows: int
    kept_until_s: int


def _explain(e: Exception, where: str) -> StoreError:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "Cannot lock file" in str(e):
        return StoreError(f"{where} is open in another process (a chDB path admits one process "
                          "at a time): stop the other `spyglass up`, or reach its data through "
                          "its API")
    return StoreError(f"{where}: {text}")


class FlowStore:
    """Flows and lost events in ClickHouse. Thread-safe: calls are serialised."""

    def __init__(self, client: Any, dsn: str, database: str, query_client: Any = None) -> None:
        self._client = client
        self._query_client = query_client
        self.dsn = dsn
        self.database = database
        self.retention_days = DEFAULT_RETENTION_DAYS
        self._lock = threading.RLock()
        self._closed = False
        self._user_sql = UserSql(query_client or client, database)

    # -- opening ---------------------------------------------------------------------

    @classmethod
    def open(cls, dsn: str, *, retention_days: int = DEFAULT_RETENTION_DAYS,
             query_dsn: str | None = None) -> FlowStore:
        """Open (creating and migrating as needed) the store at `dsn`.

        `query_dsn` (a ClickHouse server only) is the read-only user that `spyglass
        store ddl` prints: users' `query sql` then runs as that user, so the server's
        own grants back the guard up.
        """
        if isinstance(retention_days, bool) or not isinstance(retention_days, int) \
                or retention_days < 1:
            raise StoreError(f"retention of {retention_days!r} days is not a positive number "
                             "of days; give e.g. --retention 7")
        query_client = None
        if query_dsn:
            if not dsn.startswith(("http://", "https://")) or \
                    not query_dsn.startswith(("http://", "https://")):
                raise StoreError("--query-store is for a ClickHouse server: give both --store "
                                 "and --query-store as http(s)://user:pass@host:8123/db")
            query_client, _, _ = _connect(query_dsn)
        client, database, where = _connect(dsn)
        store = cls(client, redact_dsn(dsn), database, query_client)
        try:
            store._migrate(retention_days)
        except StoreError:
            store.close()
            raise
        except Exception as e:
            store.close()
            raise _explain(e, f"preparing the store at {where}") from e
        return store

    def _migrate(self, retention_days: int) -> None:
        db = self.database
        c = self._client
        c.command(f"CREATE DATABASE IF NOT EXISTS {db}")
        c.command(version_table_ddl(db))
        current = int(c.query(f"SELECT max(version) FROM {db}.{SCHEMA_VERSION_TABLE}")
                      .result_rows[0][0] or 0)
        if current > SCHEMA_VERSION:
            raise StoreError(f"the store at {self.dsn} has schema version {current}, newer than "
                             f"this Spyglass knows ({SCHEMA_VERSION}): upgrade Spyglass, or use "
                             "another --store")
        for m in migrations(db, retention_days):
            if m.version <= current:
                continue
            for statement in m.statements:
                c.command(statement)
            c.command(f"INSERT INTO {db}.{SCHEMA_VERSION_TABLE} (version, description) "
                      "VALUES ({v:UInt32}, {d:String})",
                      parameters={"v": m.version, "d": m.description})
        self._apply_retention(retention_days)
        self.retention_days = retention_days
        c.database = db

    def _apply_retention(self, retention_days: int) -> None:
        """Change the TTL when --retention changed since the tables were made, or when it is
        not the expression `ttl_clause` writes (a server table made by hand or by an older
        DDL, whose TTL would drop imported history)."""
        for t in TABLES:
            if not t.ttl:
                continue
            ttl = self._ttl_of(t.name)
            if ttl is not None and ttl_days(ttl, t.keep_column) != retention_days:
                self._client.command(f"ALTER TABLE {self.database}.{t.name} "
                                     f"MODIFY TTL {ttl_clause(retention_days, t.keep_column)}")

    def _ttl_of(self, table: str) -> str | None:
        """The table's TTL expression as the server normalised it; "" when it has none,
        None when there is no such table."""
        rows = self._client.query(
            "SELECT engine_full FROM system.tables WHERE database = {d:String} "
            "AND name = {n:String}", parameters={"d": self.database, "n": table}).result_rows
        if not rows:
            return None
        m = _TTL.search(str(rows[0][0]))
        return m.group(1).strip() if m else ""

    # -- plumbing --------------------------------------------------------------------

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        if self._closed:
            raise StoreError(f"{what}: the store is closed; open it again with FlowStore.open")
        with self._lock:
            try:
                yield
            except (StoreError, SqlRefused):
                raise
            except Exception as e:
                raise _explain(e, f"{what} on {self.dsn}") from e

    def _df(self, sql: str, params: dict[str, Any], what: str,
            settings: dict[str, Any] | None = None) -> pd.DataFrame:
        with self._guard(what):
            return self._client.query_df(sql, parameters=params, settings=settings or {})

    # -- writing ---------------------------------------------------------------------

    def insert_arrow(self, table: pa.Table | pa.RecordBatch) -> int:
        """Insert rows shaped like `flows_to_arrow` output; returns how many."""
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if table.num_rows == 0:
            return 0
        if table.schema.names != FLOW_SCHEMA.names:
            missing = sorted(set(FLOW_SCHEMA.names) - set(table.schema.names))
            extra = sorted(set(table.schema.names) - set(FLOW_SCHEMA.names))
            raise StoreError(f"rows do not match the flows table (missing {missing}, unknown "
                             f"{extra}); build them with flows_to_arrow or enriched_to_arrow")
        with self._guard(f"inserting {table.num_rows} flows"):
            self._client.insert_arrow(FLOWS, table)
        return int(table.num_rows)

    def insert_imported(self, table: pa.Table, *, retention_days: int = DEFAULT_RETENTION_DAYS,
                        ) -> Imported:
        """Insert imported flows (rows like `flows_to_arrow`'s), kept `retention_days`
        from now whatever their own time, and check that every row is there afterwards.

        Imports are history, often older than the live retention: without `keep_until`
        the TTL would drop them as they land, and the import would report rows nobody
        can find. So a table whose TTL ignores `keep_until` (a server table made by
        hand) is refused before anything is written, and the rows are counted again
        by uuid after the insert: fewer than sent is an error, never a silent loss.
        """
        if isinstance(retention_days, bool) or not isinstance(retention_days, int) \
                or not 1 <= retention_days <= MAX_IMPORT_RETENTION_DAYS:
            raise StoreError(f"an import retention of {retention_days!r} days is out of range; "
                             f"give 1 to {MAX_IMPORT_RETENTION_DAYS} days, e.g. --retention 30")
        kept_until_s = -(-time.time_ns() // 10**9) + retention_days * 86400
        if table.num_rows == 0:
            return Imported(0, kept_until_s)
        if table.schema.names != FLOW_SCHEMA.names:
            raise StoreError("imported rows do not match the flows table; build them with "
                             "flows_to_arrow")
        n = int(table.num_rows)
        times = table.column("time").cast(pa.int64())
        p = Params()
        # The time bounds prune partitions; uuid has a bloom filter index.
        lo = p.add(pc.min(times).as_py(), "Int64")
        hi = p.add(pc.max(times).as_py(), "Int64")
        found_sql = (f"SELECT count() FROM {FLOWS} "
                     f"WHERE time >= fromUnixTimestamp64Nano({lo}, 'UTC') "
                     f"AND time <= fromUnixTimestamp64Nano({hi}, 'UTC') "
                     f"AND {KEEP_UNTIL.name} = toDateTime({p.add(kept_until_s, 'UInt32')}, 'UTC') "
                     f"AND uuid IN {p.add(table.column('uuid').to_pylist(), 'Array(String)')}")
        with self._guard(f"importing {n} flows"):
            ttl = self._ttl_of(FLOWS)
            if ttl and ttl_days(ttl, KEEP_UNTIL.name) is None:
                raise ImportNotKept(
                    f"nothing was imported: the flows table's TTL ({ttl}) does not keep imported "
                    f"flows until {KEEP_UNTIL.name}, so history older than the retention "
                    "would be dropped; make it "
                    f"`TTL {ttl_clause(self.retention_days, KEEP_UNTIL.name)}` (reopening "
                    "the store with this Spyglass does it)")
            self._client.insert_arrow(FLOWS, with_keep_until(table, kept_until_s))
            found = int(self._client.query(found_sql, parameters=p.values).result_rows[0][0])
        if found < n:
            raise ImportNotKept(
                f"{n} flows were sent to the store but only {found} are in it now: the store "
                f"dropped {n - found} (check the flows table's TTL with `SHOW CREATE TABLE "
                f"flows`; it must keep rows until {KEEP_UNTIL.name})")
        return Imported(n, kept_until_s)

    def insert_lost(self, events: Sequence[LostEvent], *, node_name: str = "") -> None:
        if not events:
            return
        with self._guard(f"inserting {len(events)} lost-event records"):
            self._client.insert_arrow(LOST_EVENTS, lost_to_arrow(events, node_name))

    # -- reading flows -----------------------------------------------------------------

    def query_flows(self, filters: FilterSet, *, since_ns: int | None = None,
                    until_ns: int | None = None, limit: int = 100, order: str = "desc",
                    after: Cursor | None = None) -> tuple[list[Flow], Cursor | None]:
        """One page of flows, newest first (`desc`) or oldest first (`asc`).

        Pages are cut on (time, uuid), a total order, so following the returned
        cursor never repeats or skips a flow even when many share a timestamp.
        The cursor is None when this page was the last.
        """
        if order not in ("desc", "asc"):
            raise StoreError(f"order {order!r} is not 'desc' or 'asc'; pick one")
        _check_limit(limit)
        where, params = filters.sql()
        p = Params()
        p.values.update(params)
        conds = [where, queries.time_range(since_ns, until_ns, p)]
        if after is not None:
            try:
                t_ns, uid = int(after[0]), str(after[1])
            except (TypeError, ValueError, IndexError):
                raise StoreError(f"cursor {after!r} is not (time_ns, uuid); pass back the "
                                 "cursor a previous page returned") from None
            t = f"fromUnixTimestamp64Nano({p.add(t_ns, 'Int64')}, 'UTC')"
            op = "<" if order == "desc" else ">"
            # The plain time bound lets the primary key prune; the tuple cuts ties.
            conds.append(f"time {op}= {t} AND (time, uuid) {op} ({t}, {p.add(uid, 'String')})")
        direction = "DESC" if order == "desc" else "ASC"
        sql = (f"SELECT {_SELECT} FROM {FLOWS} WHERE {all_of(conds)} "
               f"ORDER BY time {direction}, uuid {direction} LIMIT {p.add(limit, 'UInt32')}")
        with self._guard("reading flows"):
            table = self._client.query_arrow(sql, parameters=p.values)
        flows = table_to_flows(table)
        cursor = (flows[-1].time_ns, flows[-1].uuid) if len(flows) == limit and flows else None
        return flows, cursor

    def count(self, filters: FilterSet, since_ns: int | None = None,
              until_ns: int | None = None) -> int:
        where, params = filters.sql()
        p = Params()
        p.values.update(params)
        sql = (f"SELECT count() FROM {FLOWS} "
               f"WHERE {all_of([where, queries.time_range(since_ns, until_ns, p)])}")
        with self._guard("counting flows"):
            return int(self._client.query(sql, parameters=p.values).result_rows[0][0])

    def lost(self, *, since_ns: int | None = None, until_ns: int | None = None,
             limit: int = 1000) -> list[LostEvent]:
        _check_limit(limit)
        p = Params()
        sql = (f"SELECT time, source, num_events_lost, cpu FROM {LOST_EVENTS} "
               f"WHERE {queries.time_range(since_ns, until_ns, p)} ORDER BY time "
               f"LIMIT {p.add(limit, 'UInt32')}")
        with self._guard("reading lost events"):
            table: pa.Table = self._client.query_arrow(sql, parameters=p.values)
        return table_to_lost(table)

    def namespaces(self, *, since_ns: int | None = None, until_ns: int | None = None) -> list[str]:
        p = Params()
        sql = (f"SELECT DISTINCT ns FROM {FLOWS} ARRAY JOIN [source_namespace, "
               f"destination_namespace] AS ns WHERE {queries.time_range(since_ns, until_ns, p)} "
               "AND ns != '' ORDER BY ns")
        with self._guard("listing namespaces"):
            return [str(r[0]) for r in self._client.query(sql, parameters=p.values).result_rows]

    # -- aggregations --------------------------------------------------------------------

    def service_map(self, *, since_ns: int | None = None, until_ns: int | None = None,
                    namespaces: Sequence[str] = ()) -> pd.DataFrame:
        sql, params = queries.service_map(since_ns, until_ns, _names(namespaces))
        return self._df(sql, params, "building the service map").rename(
            columns={"protocol_name": "protocol"})

    def drops(self, *, since_ns: int | None = None, until_ns: int | None = None,
              by: str = "reason", namespaces: Sequence[str] = (), limit: int = 100,
              ) -> pd.DataFrame:
        if by not in queries.DROP_BY:
            raise StoreError(f"drops by {by!r} is not supported; use one of "
                             f"{', '.join(queries.DROP_BY)}")
        _check_limit(limit)
        sql, params = queries.drops(since_ns, until_ns, by, _names(namespaces), limit)
        return self._df(sql, params, "summarising drops")

    def top(self, *, since_ns: int | None = None, until_ns: int | None = None,
            by: str = "source", metric: str = "flows", limit: int = 20) -> pd.DataFrame:
        if by not in queries.TOP_BY:
            raise StoreError(f"top by {by!r} is not supported; use one of "
                             f"{', '.join(queries.TOP_BY)}")
        if metric not in queries.TOP_METRICS:
            raise StoreError(f"metric {metric!r} is not supported; use one of "
                             f"{', '.join(queries.TOP_METRICS)}")
        _check_limit(limit)
        sql, params = queries.top(since_ns, until_ns, by, metric, limit)
        return self._df(sql, params, "ranking top talkers")

    def timeseries(self, filters: FilterSet, *, since_ns: int | None = None,
                   until_ns: int | None = None, bucket_s: int = 60) -> pd.DataFrame:
        """Flow counts per time bucket and verdict; empty buckets inside the range are 0."""
        if isinstance(bucket_s, bool) or not isinstance(bucket_s, int) or bucket_s < 1:
            raise StoreError(f"bucket of {bucket_s!r} s is not a positive whole number of "
                             "seconds; give e.g. 60")
        if since_ns is not None and until_ns is not None and \
                (until_ns - since_ns) // (bucket_s * 10**9) > 100_000:
            raise StoreError("that range has more than 100000 buckets; use a larger bucket "
                             "or a shorter range")
        where, params = filters.sql()
        sql, params = queries.timeseries(where, params, since_ns, until_ns, bucket_s)
        df = self._df(sql, params, "counting flows over time").rename(columns={"bucket": "time"})
        return _fill_buckets(df, since_ns, until_ns, bucket_s)

    def sql(self, text: str, *, limit: int = 10000, timeout_s: float = 10) -> pd.DataFrame:
        """Run a user's read-only SELECT over flows/lost_events, vetted, capped and timed out.

        ClickHouse's own parser vets it (`usersql`): what runs is exactly what was
        checked. A refusal says what was refused and why; a failure carries the
        server's reason without paths.
        """
        _check_limit(limit)
        if not 0 < float(timeout_s) <= 600:
            raise StoreError(f"timeout {timeout_s!r} s is out of range; give 0 < timeout <= 600")
        if self._closed:
            raise StoreError("running the query: the store is closed")
        with self._lock:
            try:
                return self._user_sql.run(text, limit=limit, timeout_s=timeout_s)
            except SqlRefused as e:
                raise StoreError(f"query refused: {e}") from None
            except Exception as e:
                raise StoreError(f"query failed: {public_error(e)}") from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lock, contextlib.suppress(Exception):
            self._client.close()
            if self._query_client is not None:
                self._query_client.close()

    def __enter__(self) -> FlowStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= MAX_LIMIT:
        raise StoreError(f"limit {limit!r} is out of range; give 1 to {MAX_LIMIT}")


def _names(namespaces: Sequence[str]) -> list[str]:
    if isinstance(namespaces, str):
        return [namespaces]
    return [str(n) for n in namespaces]


def _fill_buckets(df: pd.DataFrame, since_ns: int | None, until_ns: int | None,
                  bucket_s: int) -> pd.DataFrame:
    cols = ["time", "flows", *queries.VERDICT_COLUMNS]
    if df.empty and (since_ns is None or until_ns is None):
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in cols}).assign(
            time=pd.Series(dtype="datetime64[ns, UTC]"))
    df = df.copy()
    df["time"] = pd.to_datetime(df["time"], utc=True).astype("datetime64[ns, UTC]")
    step = bucket_s * 10**9
    lo = (since_ns // step) * step if since_ns is not None else int(df["time"].iloc[0].value)
    hi = until_ns if until_ns is not None else int(df["time"].iloc[-1].value) + 1
    full = pd.DatetimeIndex(pd.to_datetime(range(lo, max(hi, lo + 1), step), utc=True),
                            name="time")
    out = df.set_index("time").reindex(full, fill_value=0).reset_index()
    for c in cols[1:]:
        out[c] = out[c].astype("int64")
    return out[cols]


# -- DSNs ----------------------------------------------------------------------------------

_DB_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _connect(dsn: str) -> tuple[Any, str, str]:
    """(client, database, where-for-messages) for a DSN, with errors that say what to fix."""
    import clickhouse_connect

    if not isinstance(dsn, str) or "://" not in dsn:
        raise StoreError(f"--store {dsn!r} is not a store address; use chdb:///abs/path or "
                         "http(s)://user:pass@host:8123/db")
    u = urllib.parse.urlsplit(dsn)
    if u.scheme == "chdb":
        if u.netloc or not u.path.startswith("/"):
            raise StoreError(f"--store {dsn!r}: a chDB path must be absolute, with three "
                             "slashes, like chdb:///var/lib/spyglass/flows")
        path = u.path
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the store directory {path}: {e.strerror}; pick "
                             "a writable --store path or create it") from e
        if not os.access(path, os.W_OK | os.X_OK):
            raise StoreError(f"the store directory {path} is not writable; fix its "
                             "permissions or pick another --store path")
        try:
            client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
        except Exception as e:
            raise _explain(e, f"the chDB store at {path}") from e
        return client, DEFAULT_DATABASE, path
    if u.scheme in ("http", "https"):
        database = u.path.strip("/") or DEFAULT_DATABASE
        if not _DB_RE.fullmatch(database):
            raise StoreError(f"--store {redact_dsn(dsn)}: database {database!r} is not a plain "
                             "name; use letters, digits and '_'")
        if not u.hostname:
            raise StoreError(f"--store {redact_dsn(dsn)} names no host; like "
                             "http://user:pass@host:8123/spyglass")
        where = f"{u.scheme}://{u.hostname}:{u.port or (8443 if u.scheme == 'https' else 8123)}"
        try:
            client = clickhouse_connect.get_client(
                host=u.hostname, port=u.port or (8443 if u.scheme == "https" else 8123),
                username=urllib.parse.unquote(u.username or "default"),
                password=urllib.parse.unquote(u.password or ""), secure=u.scheme == "https",
                autogenerate_session_id=False, connect_timeout=5, send_receive_timeout=60)
        except Exception as e:
            raise StoreError(f"cannot reach ClickHouse at {where}: {str(e).splitlines()[0]}; "
                             "check the address and credentials, and that the server "
                             "runs") from e
        return client, database, where
    raise StoreError(f"--store scheme {u.scheme!r} is not supported; use chdb:///abs/path or "
                     "http(s)://user:pass@host:8123/db")

