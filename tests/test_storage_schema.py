"""One schema definition: single-node and cluster DDL, migrations, DSNs and retention."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from spyglass.model.enums import DropReason, LostEventSource
from spyglass.model.flow import LostEvent
from spyglass.storage import SCHEMA_VERSION, FlowStore, StoreError, ddl
from spyglass.storage.schema import FLOW_COLUMNS, as_int8, enum8, migrations


def _columns(statement: str) -> list[str]:
    return re.findall(r"^    `(\w+)` ", statement, re.M)


def test_single_node_ddl() -> None:
    stmts = ddl(retention_days=9)
    flows = next(s for s in stmts if ".flows\n" in s)
    assert "ENGINE = MergeTree" in flows and "PARTITION BY toDate(time)" in flows
    assert "TTL greatest(toDateTime(time) + INTERVAL 9 DAY, keep_until)" in flows
    assert "`time` DateTime64(9, 'UTC')" in flows and "Nullable(IPv6)" in flows
    assert "`keep_until` DateTime('UTC') DEFAULT toDateTime(0) COMMENT '" in flows
    assert _columns(flows) == [*(c.name for c in FLOW_COLUMNS), "keep_until"]
    lost = next(s for s in stmts if ".lost_events\n" in s)
    assert "TTL toDateTime(time) + INTERVAL 9 DAY\n" in lost and "keep_until" not in lost
    assert any("schema_version" in s for s in stmts)


def test_cluster_ddl_is_the_same_schema() -> None:
    stmts = ddl(cluster="prod")
    local = next(s for s in stmts if ".flows_local ON CLUSTER prod" in s)
    dist = next(s for s in stmts if ".flows ON CLUSTER prod" in s)
    assert "ReplicatedMergeTree('/clickhouse/tables/{shard}/spyglass/flows_local'" in local
    assert "Distributed(prod, spyglass, flows_local, cityHash64(uuid))" in dist
    single = next(s for s in ddl() if ".flows\n" in s)
    assert _columns(local) == _columns(single)
    assert "TTL greatest(toDateTime(time) + INTERVAL 7 DAY, keep_until)" in local


@pytest.mark.parametrize(("kwargs", "why"), [
    pytest.param({"database": "a;b"}, "database name", id="database"),
    pytest.param({"cluster": "x y"}, "cluster name", id="cluster"),
    pytest.param({"retention_days": 0}, "retention", id="retention"),
])
def test_ddl_refuses_bad_names(kwargs: dict[str, object], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        ddl(**kwargs)  # type: ignore[arg-type]


def test_drop_reasons_are_stored_as_their_byte() -> None:
    assert as_int8(int(DropReason.POLICY_DENIED)) == -123
    assert "'POLICY_DENIED' = -123" in enum8(DropReason, signed_bytes=True)


@pytest.mark.parametrize(("dsn", "why"), [
    pytest.param("chdb://relative/path", "absolute", id="relative"),
    pytest.param("chdb:relative", "store address", id="no-slashes"),
    pytest.param("mysql://h/db", "not supported", id="scheme"),
    pytest.param("http://u:p@h:8123/bad-db", "plain name", id="bad-db"),
    pytest.param("/var/lib/x", "store address", id="bare-path"),
])
def test_bad_dsns(dsn: str, why: str) -> None:
    with pytest.raises(StoreError, match=why):
        FlowStore.open(dsn)


def test_migrations_are_numbered_in_order_up_to_the_schema_version() -> None:
    steps = migrations("spyglass", 7)
    assert [m.version for m in steps] == list(range(1, SCHEMA_VERSION + 1))
    assert all(m.statements and m.description for m in steps)


def test_open_creates_migrates_and_keeps_its_version(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "store"
    recorded = "SELECT version, description FROM schema_version ORDER BY version"
    every_step = [(m.version, m.description) for m in migrations("spyglass", 7)]
    with FlowStore.open(f"chdb://{path}", retention_days=7) as s:
        assert path.is_dir()
        # A fresh store runs every migration, oldest first, and records each one.
        assert s._client.query(recorded).result_rows == every_step
        assert every_step[-1][0] == SCHEMA_VERSION
    with FlowStore.open(f"chdb://{path}", retention_days=3) as s:  # reopen: no new version row
        assert s._client.query(recorded).result_rows == every_step
        engine = s._client.query("SELECT engine_full FROM system.tables WHERE database = "
                                 "'spyglass' AND name = 'flows'").result_rows[0][0]
        assert "3" in re.search(r"TTL[^S]*", engine).group(0)  # type: ignore[union-attr]
        s._client.command("INSERT INTO schema_version (version, description) VALUES (99, 'x')")
    with pytest.raises(StoreError, match="upgrade Spyglass"):
        FlowStore.open(f"chdb://{path}")


def test_a_version_1_store_is_brought_to_the_schema_version(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'v1'}"
    recorded = "SELECT version FROM schema_version ORDER BY version"
    source_type = ("SELECT type FROM system.columns WHERE database = 'spyglass' AND "
                   "table = 'lost_events' AND name = 'source'")
    with FlowStore.open(dsn) as s:  # made the store an earlier Spyglass left: version 1 only
        v1 = enum8(LostEventSource).replace(", 'AGENT_RESTART' = 102", "")
        s._client.command(f"ALTER TABLE spyglass.lost_events MODIFY COLUMN source {v1}")
        s._client.command("ALTER TABLE spyglass.schema_version DELETE WHERE version > 1 "
                          "SETTINGS mutations_sync = 1")
        assert s._client.query(recorded).result_rows == [(1,)]
        assert "AGENT_RESTART" not in s._client.query(source_type).result_rows[0][0]
    with FlowStore.open(dsn) as s:
        assert s._client.query(recorded).result_rows == [
            (v,) for v in range(1, SCHEMA_VERSION + 1)]
        assert "'AGENT_RESTART' = 102" in s._client.query(source_type).result_rows[0][0]
        s.insert_lost([LostEvent(time_ns=time.time_ns(), source=LostEventSource.AGENT_RESTART,
                                 num_events_lost=3)])
        assert s._client.query("SELECT source, num_events_lost FROM lost_events"
                               ).result_rows == [("AGENT_RESTART", 3)]


def test_a_version_2_store_gets_backends_as_destinations(tmp_path: Path) -> None:
    """Version 2 kept a translated flow's VIP as the destination and the backend in
    destination_xlated_*; version 3 swaps them into destination_* and service_*."""
    dsn = f"chdb://{tmp_path / 'v2'}"
    with FlowStore.open(dsn) as s:  # made into the store a version-2 Spyglass left
        c = s._client
        c.command("ALTER TABLE spyglass.flows RENAME COLUMN service_ip TO destination_xlated_ip")
        c.command("ALTER TABLE spyglass.flows RENAME COLUMN service_port TO "
                  "destination_xlated_port")
        c.command("ALTER TABLE spyglass.schema_version DELETE WHERE version > 2 "
                  "SETTINGS mutations_sync = 1")
        c.command("INSERT INTO spyglass.flows (time, uuid, destination_ip, destination_port, "
                  "destination_xlated_ip, destination_xlated_port) VALUES "
                  "(now64(9), 'translated', '::ffff:10.96.0.10', 80, '::ffff:10.244.0.3', 8080), "
                  "(now64(9), 'plain', '::ffff:10.244.0.5', 53, NULL, 0)")
    with FlowStore.open(dsn) as s:
        rows = s._client.query(
            "SELECT uuid, IPv6NumToString(destination_ip), destination_port, "
            "IPv6NumToString(service_ip), service_port FROM spyglass.flows ORDER BY uuid"
        ).result_rows
        assert rows == [("plain", "::ffff:10.244.0.5", 53, None, 0),
                        ("translated", "::ffff:10.244.0.3", 8080, "::ffff:10.96.0.10", 80)]
        assert s._client.query("SELECT max(version) FROM spyglass.schema_version"
                               ).result_rows == [(SCHEMA_VERSION,)]
