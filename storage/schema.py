"""The ClickHouse schema: one definition for chDB, a server and a cluster.

Column names follow the `Flow` fields (and the filter SQL in
`collector/filters`, which cannot import this module, uses the same names),
so a user's `spyglass query sql` reads like Hubble's JSON. Every table is
described once here; `ddl()` renders it as MergeTree for one node or as
ReplicatedMergeTree + Distributed for a cluster, and `MIGRATIONS` is the
ordered list of steps a store goes through to reach `SCHEMA_VERSION`.

Why these types (docs/storage.md has the long form):
- enums are Enum8 with the Python enums' own numbers, so a stored row reads
  back as the same member. Drop reasons are the datapath's u8 codes, which do
  not fit Enum8's -128..127, so they are stored as the same byte read as a
  signed number (133 is stored as -123), a reinterpretation, not a mapping;
- both address families share one `Nullable(IPv6)` column (IPv4 as
  ::ffff:a.b.c.d), so one CIDR test serves both and NULL keeps "no address"
  apart from "::";
- endpoint, workload and policy names repeat endlessly: LowCardinality.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

import pyarrow as pa

from spyglass.model.enums import (
    DropReason,
    EventType,
    LostEventSource,
    ObservationPoint,
    PolicyMatchType,
    TraceReason,
    TrafficDirection,
    Verdict,
)

DEFAULT_DATABASE = "spyglass"
DEFAULT_RETENTION_DAYS = 7
#: The longest an import may ask to be kept. `keep_until` is a DateTime, which ends at
#: 2106-02-07: 25,000 days (68 years) from now stays inside it for decades to come.
MAX_IMPORT_RETENTION_DAYS = 25_000
#: The version `MIGRATIONS` brings a store to.
SCHEMA_VERSION = 4

FLOWS = "flows"
LOST_EVENTS = "lost_events"
SCHEMA_VERSION_TABLE = "schema_version"
#: The tables user SQL may read.
QUERYABLE_TABLES = (FLOWS, LOST_EVENTS)


def as_int8(code: int) -> int:
    """A u8 code as the signed byte Enum8 stores (133 -> -123)."""
    return code - 256 if code > 127 else code


def enum8(cls: type[enum.IntEnum], *, signed_bytes: bool = False) -> str:
    """An Enum8 type with the Python enum's names and numbers."""
    items = ", ".join(
        f"'{m.name}' = {as_int8(int(m)) if signed_bytes else int(m)}" for m in cls)
    return f"Enum8({items})"


LC = "LowCardinality(String)"
POLICY_TYPE = (f"Array(Tuple(namespace {LC}, name {LC}, kind {LC}))")
WORKLOAD_TYPE = f"Array(Tuple(name {LC}, kind {LC}))"
_POLICY_ARROW = pa.list_(pa.struct([("namespace", pa.string()), ("name", pa.string()),
                                    ("kind", pa.string())]))
_WORKLOAD_ARROW = pa.list_(pa.struct([("name", pa.string()), ("kind", pa.string())]))
_TS = pa.timestamp("ns", tz="UTC")


@dataclass(frozen=True, slots=True)
class Column:
    """A column: its ClickHouse type and the Arrow type rows are built in."""

    name: str
    ch_type: str
    arrow: pa.DataType
    comment: str = ""
    default: str = ""

    def sql(self) -> str:
        """The column as a CREATE TABLE or ADD COLUMN clause declares it."""
        assert "'" not in self.comment and "\\" not in self.comment
        return (f"`{self.name}` {self.ch_type}" + (f" DEFAULT {self.default}" if self.default
                                                   else "")
                + (f" COMMENT '{self.comment}'" if self.comment else ""))


def _endpoint(side: str) -> list[Column]:
    return [
        Column(f"{side}_ID", "UInt32", pa.uint32(), "endpoint id on its node"),
        Column(f"{side}_identity", "UInt32", pa.uint32(), "security identity"),
        Column(f"{side}_namespace", LC, pa.string()),
        Column(f"{side}_pod_name", LC, pa.string()),
        Column(f"{side}_labels", f"Array({LC})", pa.list_(pa.string()),
               "Cilium-style labels, e.g. k8s:app=web"),
        Column(f"{side}_workloads", WORKLOAD_TYPE, _WORKLOAD_ARROW),
    ]


def _service(side: str) -> list[Column]:
    return [
        Column(f"{side}_service_namespace", LC, pa.string()),
        Column(f"{side}_service_name", "LowCardinality(Nullable(String))", pa.string(),
               "NULL: no service"),
    ]


FLOW_COLUMNS: tuple[Column, ...] = (
    Column("time", "DateTime64(9, 'UTC')", _TS),
    Column("uuid", "String", pa.string()),
    Column("node_name", LC, pa.string()),
    Column("verdict", enum8(Verdict), pa.int8()),
    Column("drop_reason", enum8(DropReason, signed_bytes=True), pa.int8(),
           "the datapath u8 code, as a signed byte"),
    Column("event_type", enum8(EventType), pa.int8()),
    Column("event_subtype", "UInt8", pa.uint8()),
    Column("observation_point", enum8(ObservationPoint), pa.int8()),
    Column("trace_reason", enum8(TraceReason), pa.int8()),
    Column("traffic_direction", enum8(TrafficDirection), pa.int8()),
    Column("is_reply", "Nullable(Bool)", pa.bool_(), "NULL: unknown"),
    Column("ip_version", "UInt8", pa.uint8()),
    Column("source_ip", "Nullable(IPv6)", pa.binary(16), "IPv4 as ::ffff:a.b.c.d"),
    Column("destination_ip", "Nullable(IPv6)", pa.binary(16)),
    Column("service_ip", "Nullable(IPv6)", pa.binary(16),
           "the service address a translated connection asked for; NULL: none"),
    Column("protocol", "UInt8", pa.uint8()),
    Column("source_port", "UInt16", pa.uint16()),
    Column("destination_port", "UInt16", pa.uint16()),
    Column("service_port", "UInt16", pa.uint16(), "the service port, with service_ip"),
    Column("tcp_flags", "UInt8", pa.uint8(), "the flag byte of the TCP header"),
    Column("icmp_type", "UInt8", pa.uint8()),
    Column("icmp_code", "UInt8", pa.uint8()),
    *_endpoint("source"),
    *_endpoint("destination"),
    *_service("source"),
    *_service("destination"),
    Column("interface_index", "UInt32", pa.uint32()),
    Column("interface_name", LC, pa.string()),
    Column("packets", "UInt64", pa.uint64()),
    Column("bytes", "UInt64", pa.uint64()),
    Column("policy_match_type", enum8(PolicyMatchType), pa.int8()),
    Column("ingress_allowed_by", POLICY_TYPE, _POLICY_ARROW),
    Column("egress_allowed_by", POLICY_TYPE, _POLICY_ARROW),
    Column("ingress_denied_by", POLICY_TYPE, _POLICY_ARROW),
    Column("egress_denied_by", POLICY_TYPE, _POLICY_ARROW),
)

#: Not a `Flow` field, so not in FLOW_COLUMNS: the live writer never sends it (its rows
#: take the default, which costs nothing and compresses to nothing); imports set it, so
#: that history years old stays as long as the import asked (see `ttl_clause`).
KEEP_UNTIL = Column("keep_until", "DateTime('UTC')", pa.timestamp("s", tz="UTC"),
                    "imported flows are kept until then, whatever their time; "
                    "1970 (live flows): kept for the retention only", default="toDateTime(0)")

LOST_COLUMNS: tuple[Column, ...] = (
    Column("time", "DateTime64(9, 'UTC')", _TS),
    Column("source", enum8(LostEventSource), pa.int8()),
    Column("num_events_lost", "UInt64", pa.uint64()),
    Column("cpu", "Nullable(UInt32)", pa.uint32()),
    Column("node_name", LC, pa.string()),
)

FLOW_SCHEMA = pa.schema([pa.field(c.name, c.arrow, nullable=c.ch_type.startswith(
    ("Nullable", "LowCardinality(Nullable"))) for c in FLOW_COLUMNS])
LOST_SCHEMA = pa.schema([pa.field(c.name, c.arrow, nullable=c.ch_type.startswith("Nullable"))
                         for c in LOST_COLUMNS])
#: What an import inserts: a flow's columns plus `keep_until`.
IMPORT_SCHEMA = FLOW_SCHEMA.append(pa.field(KEEP_UNTIL.name, KEEP_UNTIL.arrow, nullable=False))

#: Hour first: nearly every query names a time range, and within an hour the
#: namespace, pod and verdict of the source narrow the common filters.
#: `time` last keeps each hour's granules in time order for paging.
FLOWS_ORDER_BY = "(toStartOfHour(time), source_namespace, source_pod_name, verdict, time)"
#: Flows are found by either side: destination pods/namespaces get skip indexes.
FLOWS_INDEXES = (
    "INDEX idx_dst_ns destination_namespace TYPE set(256) GRANULARITY 4",
    "INDEX idx_dst_pod destination_pod_name TYPE bloom_filter(0.01) GRANULARITY 4",
    "INDEX idx_src_pod source_pod_name TYPE bloom_filter(0.01) GRANULARITY 4",
    "INDEX idx_uuid uuid TYPE bloom_filter(0.001) GRANULARITY 4",
)


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    order_by: str
    partition_by: str | None = None
    ttl: bool = False
    #: A column whose time the TTL waits for too (the rows an import keeps).
    keep_column: str | None = None
    indexes: tuple[str, ...] = ()
    shard_key: str = "rand()"


TABLES: tuple[Table, ...] = (
    Table(FLOWS, (*FLOW_COLUMNS, KEEP_UNTIL), FLOWS_ORDER_BY, "toDate(time)", ttl=True,
          keep_column=KEEP_UNTIL.name, indexes=FLOWS_INDEXES, shard_key="cityHash64(uuid)"),
    Table(LOST_EVENTS, LOST_COLUMNS, "time", "toDate(time)", ttl=True),
)


def ttl_clause(retention_days: int, keep_column: str | None = None) -> str:
    """When a row expires: `retention_days` after its time, or at `keep_column` if later.

    Live rows leave `keep_column` at 1970, so they expire as the retention says; an
    imported row carries the date its import asked for, so a flow from 2022 is not
    dropped on insert (with `ttl_only_drop_parts`, a part goes when its latest TTL has
    passed, and imports land in their own days' partitions).
    """
    base = f"toDateTime(time) + INTERVAL {int(retention_days)} DAY"
    return f"greatest({base}, {keep_column})" if keep_column else base


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check(database: str, retention_days: int, cluster: str | None) -> None:
    ident = _IDENT
    if not ident.fullmatch(database):
        raise ValueError(f"database name {database!r} is not a plain identifier; "
                         "use letters, digits and '_', like 'spyglass'")
    if cluster is not None and not ident.fullmatch(cluster):
        raise ValueError(f"cluster name {cluster!r} is not a plain identifier; use the name "
                         "from <remote_servers> in the server config, like 'default'")
    if isinstance(retention_days, bool) or not isinstance(retention_days, int) \
            or retention_days < 1:
        raise ValueError(f"retention of {retention_days!r} days is not a positive whole "
                         "number of days; give e.g. --retention 7")


def _table_ddl(t: Table, database: str, engine: str, retention_days: int, name: str,
               on_cluster: str) -> str:
    body = [f"    {c.sql()}" for c in t.columns]
    body += [f"    {ix}" for ix in t.indexes]
    lines = [f"CREATE TABLE IF NOT EXISTS {database}.{name}{on_cluster}", "(",
             ",\n".join(body), ")", f"ENGINE = {engine}"]
    if t.partition_by:
        lines.append(f"PARTITION BY {t.partition_by}")
    lines.append(f"ORDER BY {t.order_by}")
    if t.ttl:
        lines.append(f"TTL {ttl_clause(retention_days, t.keep_column)}")
        lines.append("SETTINGS ttl_only_drop_parts = 1")
    return "\n".join(lines)


def version_table_ddl(database: str, on_cluster: str = "", engine: str = "MergeTree") -> str:
    return (f"CREATE TABLE IF NOT EXISTS {database}.{SCHEMA_VERSION_TABLE}{on_cluster}\n"
            "(\n    `version` UInt32,\n    `applied_at` DateTime('UTC') DEFAULT now(),\n"
            f"    `description` String\n)\nENGINE = {engine}\nORDER BY version")


def ddl(cluster: str | None = None, database: str = DEFAULT_DATABASE,
        retention_days: int = DEFAULT_RETENTION_DAYS) -> list[str]:
    """The statements that create the whole store, one string each.

    With `cluster`, every table becomes `<name>_local` (ReplicatedMergeTree,
    one replica path per shard) plus `<name>` (Distributed over it), so
    queries name the same tables on a cluster as on one node.
    """
    _check(database, retention_days, cluster)
    if cluster is None:
        out = [f"CREATE DATABASE IF NOT EXISTS {database}"]
        out += [_table_ddl(t, database, "MergeTree", retention_days, t.name, "")
                for t in TABLES]
        out.append(version_table_ddl(database))
        return out
    on = f" ON CLUSTER {cluster}"
    out = [f"CREATE DATABASE IF NOT EXISTS {database}{on}"]
    for t in TABLES:
        local = f"{t.name}_local"
        engine = (f"ReplicatedMergeTree('/clickhouse/tables/{{shard}}/{database}/{local}', "
                  "'{replica}')")
        out.append(_table_ddl(t, database, engine, retention_days, local, on))
        out.append(f"CREATE TABLE IF NOT EXISTS {database}.{t.name}{on}\n"
                   f"AS {database}.{local}\n"
                   f"ENGINE = Distributed({cluster}, {database}, {local}, {t.shard_key})")
    out.append(version_table_ddl(
        database, on, f"ReplicatedMergeTree('/clickhouse/tables/{{shard}}/{database}/"
                      f"{SCHEMA_VERSION_TABLE}', '{{replica}}')"))
    return out


QUERY_USER = "spyglass_query"


def query_user_ddl(database: str = DEFAULT_DATABASE, cluster: str | None = None,
                   user: str = QUERY_USER) -> list[str]:
    """A user that can only SELECT from flows and lost_events, for `query sql`.

    Give it to the agent as `--query-store`, so that users' SQL runs with the server's
    grants behind Spyglass's own guard: no other table, no table functions (those
    need grants of their own), no writes. The password is a placeholder to replace.
    """
    _check(database, DEFAULT_RETENTION_DAYS, cluster)
    if not _IDENT.fullmatch(user):
        raise ValueError(f"user name {user!r} is not a plain identifier")
    on = f" ON CLUSTER {cluster}" if cluster else ""
    tables = [FLOWS, LOST_EVENTS]
    if cluster:
        tables += [f"{FLOWS}_local", f"{LOST_EVENTS}_local"]
    return [f"CREATE USER IF NOT EXISTS {user}{on} IDENTIFIED WITH sha256_password BY "
            f"'<choose a password>' DEFAULT DATABASE {database}",
            *(f"GRANT{on} SELECT ON {database}.{t} TO {user}" for t in tables)]


@dataclass(frozen=True, slots=True)
class Migration:
    """One step from `version - 1` to `version`; statements run in order."""

    version: int
    description: str
    statements: tuple[str, ...]


def migrations(database: str, retention_days: int) -> tuple[Migration, ...]:
    """Every step a single-node store goes through, oldest first.

    Version 1 is the initial schema. Later changes append a step (e.g. an
    `ALTER TABLE flows ADD COLUMN …` or a new Enum8 member) and bump
    SCHEMA_VERSION; never edit a step that has shipped.
    """
    create = tuple(s for s in ddl(None, database, retention_days)[1:]
                   if SCHEMA_VERSION_TABLE not in s)
    steps = (
        Migration(1, "flows and lost_events tables", create),
        Migration(2, "lost_events.source knows AGENT_RESTART", (
            f"ALTER TABLE {database}.{LOST_EVENTS} MODIFY COLUMN source "
            f"{enum8(LostEventSource)}",)),
        # Translated flows used to keep the service address as the destination and the
        # backend in destination_xlated_*; now the destination is the backend (as Cilium
        # reports it) and the service address is service_*. On a new store the table is
        # born with service_* and is empty, so the renames and the swap do nothing.
        Migration(3, "translated flows: the backend is the destination, service_* the VIP", (
            f"ALTER TABLE {database}.{FLOWS} RENAME COLUMN IF EXISTS destination_xlated_ip "
            "TO service_ip",
            f"ALTER TABLE {database}.{FLOWS} RENAME COLUMN IF EXISTS destination_xlated_port "
            "TO service_port",
            f"ALTER TABLE {database}.{FLOWS} UPDATE destination_ip = service_ip, "
            "destination_port = service_port, service_ip = destination_ip, "
            "service_port = destination_port WHERE service_ip IS NOT NULL "
            "SETTINGS mutations_sync = 2",)),
        # Imports keep their history for their own --retention, whatever its age. Rows
        # already stored get keep_until = 1970, so their TTL values do not change: the
        # new TTL is not materialised (that would rewrite every part for nothing).
        Migration(4, "imported flows are kept until keep_until", (
            f"ALTER TABLE {database}.{FLOWS} ADD COLUMN IF NOT EXISTS {KEEP_UNTIL.sql()}",
            f"ALTER TABLE {database}.{FLOWS} MODIFY TTL "
            f"{ttl_clause(retention_days, KEEP_UNTIL.name)} "
            "SETTINGS materialize_ttl_after_modify = 0",)),
    )
    assert steps[-1].version == SCHEMA_VERSION
    return steps
