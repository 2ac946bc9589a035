"""Imported history keeps its own retention: a flow from 2022 stays queryable.

The flows table drops a day's part once its TTL has passed (`ttl_only_drop_parts`), and a
Hubble export from 2022 is long past a 7-day retention, so imports set `keep_until` and
the TTL is `greatest(time + retention, keep_until)`. These tests hold the store, the
migration from a version-3 store, the API route and the CLI to that: what an import
says it stored is what a history query and `query sql` then find, even after a forced
TTL merge; and live rows still expire as before.

chDB admits one store path per process at a time: each store test opens its own path
and closes it, and the API runs in a child process that owns its store.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from support.childapi import child_api

from spyglass.cli import interop
from spyglass.cli.main import main
from spyglass.collector.filters import FilterSet
from spyglass.model.flow import Endpoint, Flow, event_to_response
from spyglass.model.hubble_json import MAX_FUTURE_NS, parse_lines
from spyglass.storage import FlowStore, StoreError, flows_to_arrow, schema
from spyglass.storage.store import ImportNotKept

pytest.importorskip("chdb")

S = 10**9
DAY = 86400 * S


def ns(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()) * S


#: A day in 2022, long past any live retention.
DAY_2022 = ns("2022-03-01T00:00:00")
WEB = Endpoint(ID=1, identity=300, namespace="shop", pod_name="web-0", labels=("k8s:app=web",))
OLD = [Flow(time_ns=DAY_2022 + 10 * 3600 * S + i * S, uuid=f"2022-{i}", source=WEB,
            source_ip="10.0.0.1", destination_ip="10.0.0.2", protocol=6,
            destination_port=8080, node_name="old-node") for i in range(5)]
IN_2022 = (ns("2022-01-01T00:00:00"), ns("2023-01-01T00:00:00"))
COUNT_2022 = ("SELECT count() AS n FROM flows WHERE time >= '2022-01-01 00:00:00' "
              "AND time < '2023-01-01 00:00:00'")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FlowStore]:
    with FlowStore.open(f"chdb://{tmp_path / 'flows'}") as s:
        yield s


def uuids(store: FlowStore) -> list[str]:
    return [str(r[0]) for r in store._client.query("SELECT uuid FROM flows ORDER BY uuid")
            .result_rows]


def in_2022(store: FlowStore) -> list[Flow]:
    page, _ = store.query_flows(FilterSet(), since_ns=IN_2022[0], until_ns=IN_2022[1],
                                limit=100, order="asc")
    return page


# -- the store ------------------------------------------------------------------------------


def test_imported_2022_flows_are_found_by_history_and_sql(store: FlowStore) -> None:
    before = time.time()
    done = store.insert_imported(flows_to_arrow(OLD), retention_days=30)
    assert done.rows == len(OLD)
    assert before + 30 * 86400 <= done.kept_until_s <= time.time() + 30 * 86400 + 1
    assert in_2022(store) == OLD
    assert store.count(FilterSet(), since_ns=IN_2022[0], until_ns=IN_2022[1]) == len(OLD)
    assert store.sql(COUNT_2022)["n"].tolist() == [len(OLD)]
    kept = store._client.query("SELECT DISTINCT toUnixTimestamp(keep_until) FROM flows"
                               ).result_rows
    assert kept == [(done.kept_until_s,)]


def test_a_forced_ttl_merge_keeps_imports_and_drops_old_live_rows(store: FlowStore) -> None:
    live_old = [Flow(time_ns=DAY_2022 + 11 * 3600 * S + i, uuid=f"live-old-{i}") for i in range(3)]
    live_new = [Flow(time_ns=time.time_ns() - 3600 * S, uuid="live-new")]
    c = store._client
    c.command("SYSTEM STOP MERGES flows")  # every row lands before the TTL can act
    store.insert_arrow(flows_to_arrow(live_old + live_new))  # the live writer's path
    store.insert_imported(flows_to_arrow(OLD), retention_days=7)
    c.command("SYSTEM START MERGES flows")
    c.command("OPTIMIZE TABLE flows FINAL")  # merges every part, applying the TTL
    assert uuids(store) == sorted([f.uuid for f in OLD] + ["live-new"])
    assert in_2022(store) == OLD


def test_live_rows_never_carry_keep_until(store: FlowStore) -> None:
    store.insert_arrow(flows_to_arrow([Flow(time_ns=time.time_ns(), uuid="live")]))
    assert store._client.query("SELECT toUnixTimestamp(keep_until) FROM flows").result_rows == [
        (0,)]


@pytest.mark.parametrize("days", [0, -1, True, "7", schema.MAX_IMPORT_RETENTION_DAYS + 1])
def test_an_import_retention_out_of_range_is_refused(store: FlowStore, days: Any) -> None:
    with pytest.raises(StoreError, match="import retention of .* days is out of range"):
        store.insert_imported(flows_to_arrow(OLD), retention_days=days)
    assert uuids(store) == []


def test_the_longest_retention_fits_the_keep_until_column(store: FlowStore) -> None:
    done = store.insert_imported(flows_to_arrow(OLD[:1]),
                                 retention_days=schema.MAX_IMPORT_RETENTION_DAYS)
    got = store._client.query("SELECT toUnixTimestamp(keep_until) FROM flows").result_rows
    assert got == [(done.kept_until_s,)]  # DateTime ends in 2106: no wrap-around


def test_a_table_whose_ttl_ignores_keep_until_refuses_before_storing(store: FlowStore) -> None:
    """A server table made by hand (or an older DDL): nothing stored, and the fix named."""
    store._client.command("ALTER TABLE flows MODIFY TTL toDateTime(time) + INTERVAL 7 DAY")
    with pytest.raises(ImportNotKept, match=r"nothing was imported: .*greatest\("):
        store.insert_imported(flows_to_arrow(OLD), retention_days=7)
    assert uuids(store) == []


def test_rows_missing_after_the_insert_are_an_error(store: FlowStore,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever loses rows on the way (here: a client that stores all but one), the
    count after the insert tells."""
    real = store._client.insert_arrow
    monkeypatch.setattr(store._client, "insert_arrow",
                        lambda table, rows: real(table, rows.slice(1)))
    with pytest.raises(ImportNotKept, match="5 flows were sent to the store but only 4"):
        store.insert_imported(flows_to_arrow(OLD), retention_days=7)


def test_reimporting_the_same_flows_is_not_a_loss(store: FlowStore) -> None:
    store.insert_imported(flows_to_arrow(OLD), retention_days=7)
    assert store.insert_imported(flows_to_arrow(OLD), retention_days=7).rows == len(OLD)


# -- schema versions ------------------------------------------------------------------------


def _ttl(store: FlowStore) -> str:
    create = store._client.query("SHOW CREATE TABLE spyglass.flows").result_rows[0][0]
    return re.search(r"^TTL (.*)$", create, re.M).group(1)  # type: ignore[union-attr]


def test_reopening_with_another_retention_keeps_imports_kept(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'flows'}"
    with FlowStore.open(dsn, retention_days=3) as s:
        assert _ttl(s) == "greatest(toDateTime(time) + toIntervalDay(3), keep_until)"
        s.insert_imported(flows_to_arrow(OLD), retention_days=2)
    with FlowStore.open(dsn, retention_days=5) as s:
        assert _ttl(s) == "greatest(toDateTime(time) + toIntervalDay(5), keep_until)"
        s._client.command("OPTIMIZE TABLE flows FINAL")
        assert in_2022(s) == OLD


def test_a_version_3_store_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'v3'}"
    recent = [Flow(time_ns=time.time_ns() - i * 3600 * S, uuid=f"v3-{i}") for i in range(4)]
    with FlowStore.open(dsn) as s:  # made into the store a version-3 Spyglass left
        c = s._client
        c.command("ALTER TABLE spyglass.flows MODIFY TTL toDateTime(time) + INTERVAL 7 DAY")
        c.command("ALTER TABLE spyglass.flows DROP COLUMN keep_until")
        c.command("ALTER TABLE spyglass.schema_version DELETE WHERE version > 3 "
                  "SETTINGS mutations_sync = 1")
        s.insert_arrow(flows_to_arrow(recent))
        assert _ttl(s) == "toDateTime(time) + toIntervalDay(7)"
    with FlowStore.open(dsn) as s:
        c = s._client
        assert c.query("SELECT max(version) FROM spyglass.schema_version").result_rows == [
            (schema.SCHEMA_VERSION,)]
        assert schema.SCHEMA_VERSION == 4
        assert _ttl(s) == "greatest(toDateTime(time) + toIntervalDay(7), keep_until)"
        assert c.query("SELECT type, default_expression, comment FROM system.columns WHERE "
                       "database = 'spyglass' AND table = 'flows' AND name = 'keep_until'"
                       ).result_rows == [("DateTime('UTC')", "toDateTime(0)",
                                          schema.KEEP_UNTIL.comment)]
        c.command("OPTIMIZE TABLE flows FINAL")
        assert uuids(s) == sorted(f.uuid for f in recent)
        s.insert_imported(flows_to_arrow(OLD), retention_days=7)
        c.command("OPTIMIZE TABLE flows FINAL")
        assert in_2022(s) == OLD


# -- the file's times -----------------------------------------------------------------------


@pytest.mark.parametrize(("when", "why"), [
    pytest.param("2031-05-01T00:00:00Z", "is in the future", id="future"),
    pytest.param("1969-12-31T23:59:59Z", "is before 1970-01-01", id="before-1970"),
])
def test_flow_times_the_store_cannot_keep_are_bad_lines(when: str, why: str) -> None:
    now = ns("2026-01-01T00:00:00")
    good = json.dumps(event_to_response(OLD[0], "n"))
    bad = json.dumps({"flow": {"time": when, "uuid": "x"}})
    result = parse_lines([good, "", bad], first_line=7, now_ns=now)
    assert result.error_count == 1 and result.errors[0][0] == 9
    assert why in result.errors[0][1] and when[:19] in result.errors[0][1]


def test_a_little_clock_skew_is_accepted() -> None:
    now = ns("2026-01-01T00:00:00")
    line = json.dumps({"flow": {"time": "2026-01-01T00:30:00Z", "uuid": "x"}})
    assert MAX_FUTURE_NS >= 1800 * S
    assert parse_lines([line], now_ns=now).error_count == 0


# -- the API and the CLI over a real store ----------------------------------------------------

LOCAL_TOKEN = "local-credential-of-the-retention-test"
CREDENTIAL = {"Authorization": f"Bearer {LOCAL_TOKEN}"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A child API over its own chDB store; the CLI finds the credential in the token file."""
    with child_api(tmp_path_factory, LOCAL_TOKEN, node="node-r", namespaces=()) as url:
        yield url


def post_import(api: str, lines: list[str], params: Any = None) -> httpx.Response:
    return httpx.post(f"{api}/api/v1/flows/import", headers=CREDENTIAL, params=params,
                      content="\n".join(lines).encode(), timeout=60)


def sql_count(api: str, sql: str) -> int:
    resp = httpx.post(f"{api}/api/v1/query/sql", json={"sql": sql}, timeout=60)
    assert resp.status_code == 200, resp.text
    return int(resp.json()["records"][0]["n"])


def test_the_route_keeps_a_2022_flow_for_its_retention(api: str) -> None:
    flow = Flow(time_ns=ns("2022-06-01T12:00:00"), uuid="api-2022", source=WEB, protocol=17,
                destination_port=53)
    resp = post_import(api, [json.dumps(event_to_response(flow, "old-node"))],
                       {"retention_days": "30"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["imported"] == 1
    kept = ns(body["kept_until"][:19])
    assert abs(kept - (time.time_ns() + 30 * DAY)) < 120 * S
    got = httpx.get(f"{api}/api/v1/flows", params={"since": "2022-06-01T00:00:00Z",
                                                   "until": "2022-06-02T00:00:00Z"}, timeout=60)
    assert got.status_code == 200, got.text
    assert [r["flow"]["uuid"] for r in got.json()["flows"]] == ["api-2022"]
    assert sql_count(api, "SELECT count() AS n FROM flows WHERE uuid = 'api-2022'") == 1


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5", str(schema.MAX_IMPORT_RETENTION_DAYS + 1),
                                   str(10**30)])
def test_the_route_refuses_a_bad_retention(api: str, value: str) -> None:
    line = json.dumps(event_to_response(Flow(time_ns=DAY_2022, uuid=f"bad-{value}"), "n"))
    resp = post_import(api, [line], {"retention_days": value})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"].startswith("retention_days: ")
    assert sql_count(api, f"SELECT count() AS n FROM flows WHERE uuid = 'bad-{value}'") == 0


def test_the_route_refuses_a_flow_from_the_future(api: str) -> None:
    line = json.dumps({"flow": {"time": "2099-01-01T00:00:00Z", "uuid": "future"}})
    resp = post_import(api, [line], {"first_line": "4"})
    assert resp.status_code == 400
    assert "line 4: the flow's time 2099-01-01T00:00:00" in resp.json()["error"]


def test_cli_import_says_how_long_and_history_finds_what_it_counted(api: str,
                                                                   tmp_path: Path) -> None:
    flows = [Flow(time_ns=ns("2022-09-09T09:00:00") + i * S, uuid=f"cli-2022-{i}", source=WEB)
             for i in range(3)]
    path = tmp_path / "events.log"
    path.write_text("\n".join(json.dumps(event_to_response(f, "old-node")) for f in flows))
    result = CliRunner().invoke(main, ["import", "--server", api, "--retention", "10d",
                                       str(path)])
    assert result.exit_code == 0, result.output
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=10)).date()
    assert re.fullmatch(rf"{re.escape(str(path))}: imported 3 flows, 0 non-flow lines skipped, "
                        rf"kept until ({until}|{until + dt.timedelta(days=1)}) "
                        r"\(--retention 10\)\n", result.stdout), result.stdout
    seen = CliRunner().invoke(main, ["observe", "--server", api, "--since",
                                     "2022-09-09T00:00:00Z", "--until", "2022-09-10T00:00:00Z",
                                     "-o", "json"])
    assert seen.exit_code == 0, seen.output
    assert [json.loads(x)["flow"]["uuid"] for x in seen.stdout.splitlines()] == [
        f.uuid for f in flows]
    assert sql_count(api, "SELECT count() AS n FROM flows WHERE time >= '2022-09-09 00:00:00' "
                          "AND time < '2022-09-10 00:00:00'") == 3


@pytest.mark.parametrize(("value", "why"), [
    pytest.param("0", "'0' is out of range; give 1 to 25000 days", id="zero"),
    pytest.param("-3", "is not a number of days", id="negative"),
    pytest.param("soon", "'soon' is not a number of days", id="word"),
    pytest.param("25001", "out of range", id="too-long"),
])
def test_cli_import_refuses_a_bad_retention(tmp_path: Path, value: str, why: str) -> None:
    path = tmp_path / "events.log"
    path.write_text(json.dumps(event_to_response(OLD[0], "n")) + "\n")
    result = CliRunner().invoke(main, ["import", "--dry-run", "--retention", value, str(path)])
    assert result.exit_code == 2
    assert "--retention" in result.stderr and why in result.stderr


@pytest.mark.parametrize("value", ["1", "30", "30d", "25000"])
def test_cli_import_accepts_days_as_up_spells_them(tmp_path: Path, value: str) -> None:
    path = tmp_path / "events.log"
    path.write_text(json.dumps(event_to_response(OLD[0], "n")) + "\n")
    result = CliRunner().invoke(main, ["import", "--dry-run", "--retention", value, str(path)])
    assert result.exit_code == 0, result.output
    assert "would import 1 flows" in result.stdout


def test_the_cli_restates_the_stores_limits_exactly() -> None:
    assert interop.DEFAULT_RETENTION_DAYS == schema.DEFAULT_RETENTION_DAYS
    assert interop.MAX_IMPORT_RETENTION_DAYS == schema.MAX_IMPORT_RETENTION_DAYS
