"""FlowStore: paging, aggregations, the read-only SQL door, lost events and bad input."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from support.store import T0, clear, open_store, store_params

from spyglass.collector.filters import FilterSet, build_from_flags
from spyglass.model.enums import DropReason, LostEventSource, TrafficDirection, Verdict
from spyglass.model.flow import Endpoint, Flow, LostEvent, PolicyRef, Workload
from spyglass.storage import FlowStore, StoreError, flows_to_arrow

S = 10**9
WEB = Endpoint(ID=1, identity=300, namespace="shop", pod_name="web-1",
               labels=("k8s:app=web",), workloads=(Workload("web"),))
DB = Endpoint(ID=2, identity=301, namespace="db", pod_name="db-0", labels=("k8s:app=db",),
              workloads=(Workload("db", "StatefulSet"),))
WORLD = Endpoint(identity=2, labels=("reserved:world",))


@pytest.fixture(scope="module", params=store_params())
def store(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowStore]:
    yield from open_store(request.param, tmp_path_factory)


@pytest.fixture
def demo(store: FlowStore) -> FlowStore:
    """web -> db:5432 (forwarded, replies too), web -> world:443, and policy drops."""
    clear(store)
    fl = []
    for i in range(10):
        fl.append(Flow(time_ns=T0 + i * S, uuid=f"a{i}", source=WEB, destination=DB,
                       source_ip="10.0.0.1", destination_ip="10.0.0.2", protocol=6,
                       destination_port=5432, bytes=100))
        fl.append(Flow(time_ns=T0 + i * S + 1, uuid=f"r{i}", source=DB, destination=WEB,
                       protocol=6, source_port=5432, destination_port=40000 + i, is_reply=True,
                       bytes=10))
    for i in range(3):
        fl.append(Flow(time_ns=T0 + 70 * S + i, uuid=f"d{i}", source=WEB, destination=WORLD,
                       destination_ip="192.0.2.7", protocol=6, destination_port=443,
                       verdict=Verdict.DROPPED, drop_reason=DropReason.POLICY_DENIED,
                       traffic_direction=TrafficDirection.EGRESS,
                       egress_denied_by=(PolicyRef("no-egress", "shop"),), bytes=60))
    fl.append(Flow(time_ns=T0 + 75 * S, uuid="d9", source=WORLD, destination=DB,
                   source_ip="192.0.2.7", protocol=17, destination_port=53,
                   verdict=Verdict.DROPPED, drop_reason=DropReason.POLICY_DENIED,
                   traffic_direction=TrafficDirection.INGRESS, bytes=70))
    store.insert_arrow(flows_to_arrow(fl))
    return store


@pytest.mark.parametrize("order", ["desc", "asc"])
def test_paging_by_cursor_has_no_duplicate_and_no_gap(store: FlowStore, order: str) -> None:
    clear(store)
    rnd = random.Random(5)
    # Many flows share a timestamp: only (time, uuid) orders them.
    fl = [Flow(time_ns=T0 + rnd.randrange(20), uuid=f"{rnd.randrange(16**8):08x}-{i}")
          for i in range(500)]
    store.insert_arrow(flows_to_arrow(fl))
    seen: list[tuple[int, str]] = []
    cursor = None
    while True:
        page, cursor = store.query_flows(FilterSet(), limit=37, order=order, after=cursor)
        seen += [(f.time_ns, f.uuid) for f in page]
        if cursor is None:
            break
    want = sorted(((f.time_ns, f.uuid) for f in fl), reverse=order == "desc")
    assert seen == want


def test_time_bounds_and_filters(demo: FlowStore) -> None:
    fs = build_from_flags([("verdict", "DROPPED")])
    assert demo.count(fs) == 4
    assert demo.count(fs, since_ns=T0 + 71 * S) == 1
    assert demo.count(FilterSet(), until_ns=T0 + 5 * S) == 10
    page, _ = demo.query_flows(build_from_flags([("from-pod", "shop/web")]), limit=3)
    assert [f.uuid for f in page] == ["d2", "d1", "d0"]


def test_service_map(demo: FlowStore) -> None:
    m = demo.service_map(since_ns=T0, until_ns=T0 + 3600 * S)
    edges = {(r.src_namespace, r.src_workload, r.dst_namespace, r.dst_workload, r.dst_port,
              r.protocol): (r.connections, r.forwarded, r.dropped, r.events, r.bytes)
             for r in m.itertuples()}
    # The demo's requests reuse one 5-tuple per edge: one connection each.
    assert edges == {
        ("shop", "web", "db", "db", 5432, "TCP"): (1, 1, 0, 10, 1000),
        ("shop", "web", "", "world", 443, "TCP"): (1, 0, 1, 3, 180),
        ("", "world", "db", "db", 53, "UDP"): (1, 0, 1, 1, 70),
    }
    only_shop = demo.service_map(namespaces=["shop"])
    assert set(only_shop.dst_workload) == {"db", "world"}
    assert list(m.columns) == ["src_namespace", "src_workload", "dst_namespace",
                               "dst_workload", "dst_port", "protocol", "connections",
                               "forwarded", "dropped", "audit", "events", "bytes",
                               "first_seen", "last_seen"]


def test_drops(demo: FlowStore) -> None:
    by_reason = demo.drops(by="reason")
    assert by_reason[["reason", "code", "drops"]].values.tolist() == [["POLICY_DENIED", 133, 4]]
    by_policy = demo.drops(by="policy")
    assert by_policy[["direction", "policy_namespace", "policy_name", "drops"]].values.tolist() \
        == [["EGRESS", "shop", "no-egress", 3], ["INGRESS", "", "", 1]]
    pairs = demo.drops(by="pod_pair")
    assert pairs[["src_pod", "dst_pod", "dst_port", "drops"]].values.tolist() == [
        ["web-1", "192.0.2.7", 443, 3], ["192.0.2.7", "db-0", 53, 1]]
    with pytest.raises(StoreError, match="reason, policy, pod_pair"):
        demo.drops(by="colour")


def test_top_and_namespaces(demo: FlowStore) -> None:
    top = demo.top(by="source", metric="bytes", limit=2)
    assert top[["src_pod", "bytes"]].values.tolist() == [["web-1", 1180], ["db-0", 100]]
    assert demo.top(by="pair").iloc[0][["src_pod", "dst_pod", "flows"]].tolist() == \
        ["web-1", "db-0", 10]
    assert demo.namespaces() == ["db", "shop"]


def test_timeseries_fills_empty_buckets(demo: FlowStore) -> None:
    ts = demo.timeseries(FilterSet(), since_ns=T0, until_ns=T0 + 120 * S, bucket_s=30)
    assert ts[["flows", "forwarded", "dropped"]].values.tolist() == [
        [20, 20, 0], [0, 0, 0], [4, 0, 4], [0, 0, 0]]
    with pytest.raises(StoreError, match="bucket"):
        demo.timeseries(FilterSet(), bucket_s=0)


def test_lost_events_round_trip(store: FlowStore) -> None:
    clear(store)
    evs = [LostEvent(T0, LostEventSource.STORE, 5), LostEvent(T0 + 1, LostEventSource.
                                                              PERF_EVENT_RING_BUFFER, 2, cpu=1)]
    store.insert_lost(evs)
    assert store.lost() == evs


@pytest.mark.parametrize("query", [
    pytest.param("SELECT verdict, count() AS n FROM flows GROUP BY verdict ORDER BY n DESC",
                 id="group-by"),
    pytest.param("select count() from spyglass.flows;", id="qualified-trailing-semicolon"),
    pytest.param("WITH d AS (SELECT * FROM flows WHERE verdict = 'DROPPED') SELECT count() "
                 "FROM d", id="cte"),
    pytest.param("SELECT l, count() FROM flows ARRAY JOIN source_labels AS l GROUP BY l",
                 id="array-join"),
    pytest.param("SELECT count() FROM flows WHERE uuid IN (SELECT uuid FROM flows) -- hi",
                 id="subquery-comment"),
    pytest.param("SELECT sum(num_events_lost) FROM lost_events", id="lost-events"),
])
def test_sql_allows_selects_over_the_flows_tables(demo: FlowStore, query: str) -> None:
    assert len(demo.sql(query)) >= 1


@pytest.mark.parametrize(("query", "why"), [
    pytest.param("SELECT * FROM system.tables", "system", id="system"),
    pytest.param("SELECT 1; DROP TABLE flows", "one statement", id="two-statements"),
    pytest.param("DROP TABLE flows", "only SELECT", id="drop"),
    pytest.param("INSERT INTO flows SELECT * FROM flows", "only SELECT", id="insert"),
    pytest.param("SELECT * FROM file('/etc/passwd', 'LineAsString')", "not allowed", id="file"),
    pytest.param("SELECT * FROM url('http://x', CSV)", "not allowed", id="url"),
    pytest.param("SELECT * FROM remote('h', default.t)", "not allowed", id="remote"),
    pytest.param("SELECT * FROM numbers(10)", "not allowed", id="numbers"),
    pytest.param("SELECT * FROM schema_version", "not allowed", id="other-table"),
    pytest.param("SELECT * FROM default.flows", "database", id="other-database"),
    pytest.param("SELECT 1 FROM flows WHERE 1 IN other_table", "IN", id="in-table"),
    pytest.param("SELECT dictGet('d', 'x', 1) FROM flows", "not allowed", id="dictget"),
    pytest.param("SELECT * FROM flows INTO OUTFILE '/tmp/x'", "not allowed", id="outfile"),
    pytest.param("SELECT * FROM flows FORMAT CSV", "FORMAT", id="format"),
    pytest.param("ALTER TABLE flows DELETE WHERE 1", "only SELECT", id="alter"),
    pytest.param("", "empty", id="empty"),
])
def test_sql_refuses_everything_else(demo: FlowStore, query: str, why: str) -> None:
    with pytest.raises(StoreError, match=why):
        demo.sql(query)
    assert demo.count(FilterSet()) == 24


def test_sql_is_capped_and_timed_out(demo: FlowStore) -> None:
    assert len(demo.sql("SELECT * FROM flows", limit=5)) == 5
    with pytest.raises(StoreError, match="(?i)timeout|elapsed|limit"):
        demo.sql("SELECT count() FROM flows ARRAY JOIN range(1000000) AS r "
                 "ARRAY JOIN range(100) AS q WHERE cityHash64(r, q, uuid) % 7 = 1",
                 timeout_s=0.2)


@pytest.mark.parametrize(("kwargs", "why"), [
    pytest.param({"limit": 0}, "limit", id="limit-zero"),
    pytest.param({"order": "sideways"}, "order", id="order"),
    pytest.param({"after": ("x", 1)}, "cursor", id="cursor"),
])
def test_bad_query_arguments(store: FlowStore, kwargs: dict[str, object], why: str) -> None:
    with pytest.raises(StoreError, match=why):
        store.query_flows(FilterSet(), **kwargs)  # type: ignore[arg-type]
