"""The API over a real chDB store: import, history, injection, aggregations, SQL, CLI round trips.

chDB admits one store path per process, so the API runs in a child process
that owns its own store in a temporary directory (as `spyglass up` owns the
real one); the test drives it over HTTP like any client. The child is
stopped by its PID, and the store directory is the test's tmp_path.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from support import endpoint, flow
from support.childapi import child_api

from spyglass.cli.main import main
from spyglass.collector.filters import FILTER_FLAGS, FilterError, build_from_query
from spyglass.model.enums import DropReason, Protocol, Verdict
from spyglass.model.flow import Flow, PolicyRef, event_to_response
from spyglass.model.hubble_json import parse_lines

pytest.importorskip("chdb")

LOCAL_TOKEN = "local-credential-of-the-test-api"
CREDENTIAL = {"Authorization": f"Bearer {LOCAL_TOKEN}"}
NOW = time.time_ns()
T0 = NOW - 600 * 1_000_000_000

#: Two namespaces, every third flow dropped by policy, TCP and UDP: enough for every
#: filter and aggregation to have something to find (and to miss).
FLOWS = [
    flow(i, t0=T0, ns=ns, node="node-s", uuid=f"00000000-0000-4000-8000-{i:012d}",
         protocol=Protocol.TCP if i % 4 else Protocol.UDP, tcp_flags=0x02 if i % 4 else 0,
         source_ip=f"10.244.0.{i % 7 + 2}", destination_ip="10.244.1.9",
         dport=8080 if i % 2 else 53, bytes=100 + i,
         verdict=Verdict.DROPPED if dropped else Verdict.FORWARDED,
         drop_reason=DropReason.POLICY_DENIED if dropped else DropReason.DROP_REASON_UNKNOWN,
         source=endpoint(f"web-{i % 5}", ns, 300 + i % 3, labels=(f"app=web{i % 2}",)),
         destination=endpoint("api-0", ns, 400, labels=("app=api",)),
         ingress_denied_by=(PolicyRef("deny-web", ns),) if dropped else ())
    for i in range(60)
    for ns, dropped in [("shop" if i % 2 else "bank", i % 3 == 0)]
]


def hubble_lines(flows: list[Flow]) -> list[str]:
    lines = [json.dumps(event_to_response(f, "node-s")) for f in flows]
    lines.insert(3, json.dumps({"lost_events": {"source": "PERF_EVENT_RING_BUFFER",
                                                "num_events_lost": 2},
                                "node_name": "node-s", "time": "2025-11-26T00:00:00Z"}))
    return lines


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The child's URL; the CLI in this module finds its credential in SPYGLASS_TOKEN_FILE."""
    with child_api(tmp_path_factory, LOCAL_TOKEN, node="node-s", namespaces=("lab-only",)) as url:
        resp = httpx.post(f"{url}/api/v1/flows/import", headers=CREDENTIAL,
                          content="\n".join(hubble_lines(FLOWS)).encode(), timeout=60)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body.pop("kept_until").endswith("Z")
        assert body == {"imported": 60, "skipped": 1, "approximated": 0, "lines": 61}
        yield url


def get(url: str, path: str, params: Any = None) -> httpx.Response:
    return httpx.get(url + path, params=params, timeout=60)


def test_history_returns_the_imported_flows(api: str) -> None:
    body = get(api, "/api/v1/flows", {"since": "1h"}).json()
    got = [Flow.from_dict(r["flow"]) for r in body["flows"]]
    assert got == FLOWS


def test_history_filters_in_sql_match_the_python_filters(api: str) -> None:
    params = [("since", "1h"), ("from-namespace", "shop"), ("verdict", "DROPPED")]
    body = get(api, "/api/v1/flows", params).json()
    want = [f.uuid for f in FLOWS if build_from_query(params[1:]).matches(f)]
    assert [r["flow"]["uuid"] for r in body["flows"]] == want and want


INJECTIONS = ["x' OR '1'='1", "shop/' OR 1=1 --", "a\\' ; DROP TABLE flows; --", "%' --",
              "app=web1') OR (1=1"]


@pytest.mark.parametrize("flag", [pytest.param(f.name, id=f.name) for f in FILTER_FLAGS
                                  if f.takes_value and f.mode not in ("allowlist", "denylist")])
def test_sql_injection_through_every_filter_comes_back_as_data(api: str, flag: str) -> None:
    for value in INJECTIONS:
        params = [("since", "1h"), (flag, value)]
        resp = get(api, "/api/v1/flows", params)
        try:
            fs = build_from_query([(flag, value)])
        except FilterError as exc:
            assert resp.status_code == 400 and resp.json()["error"] == str(exc)
            continue
        assert resp.status_code == 200, resp.text
        want = [f.uuid for f in FLOWS if fs.matches(f)]
        assert [r["flow"]["uuid"] for r in resp.json()["flows"]] == want
    assert get(api, "/api/v1/flows", {"since": "1h", "first": "1"}).json()["flows"]


def test_aggregations_answer_typed_tables(api: str) -> None:
    sm = get(api, "/api/v1/service-map", {"since": "1h", "namespace": ["shop", "bank"]}).json()
    assert sm["records"] and {c["name"] for c in sm["columns"]} >= {"connections", "events"}
    drops = get(api, "/api/v1/drops", {"since": "1h", "by": "reason"}).json()
    assert sum(r["drops"] for r in drops["records"]) == sum(
        f.verdict == Verdict.DROPPED for f in FLOWS)
    top = get(api, "/api/v1/top", {"since": "1h", "metric": "bytes"}).json()
    assert top["records"]
    ts = get(api, "/api/v1/timeseries", {"since": "1h", "bucket": "1h",
                                         "verdict": "DROPPED"}).json()
    assert sum(r["flows"] for r in ts["records"]) == 20
    ns = get(api, "/api/v1/namespaces", {"since": "1h"}).json()["namespaces"]
    assert [(n["namespace"], n["stored"], n["live"]) for n in ns] == [
        ("bank", True, False), ("lab-only", False, True), ("shop", True, False)]


@pytest.mark.parametrize(("path", "params", "message"), [
    pytest.param("/api/v1/service-map", {"namespace": "shoop"}, "unknown namespace 'shoop'",
                 id="unknown-namespace"),
    pytest.param("/api/v1/drops", {"by": "colour"}, "by:", id="bad-by"),
    pytest.param("/api/v1/timeseries", {"bucket": "1.5s"}, "not a whole number of seconds",
                 id="bad-bucket"),
    pytest.param("/api/v1/top", {"since": "soon"}, "since: 'soon' is not a duration",
                 id="bad-since"),
    pytest.param("/api/v1/query/sql", {"sql": "DROP TABLE flows"}, "query refused",
                 id="sql-write"),
    pytest.param("/api/v1/query/sql", {"sql": "SELECT * FROM system.users"}, "query refused",
                 id="sql-other-table"),
])
def test_bad_queries_are_400_with_the_fix(api: str, path: str, params: dict[str, str],
                                          message: str) -> None:
    resp = get(api, path, params)
    assert resp.status_code == 400, resp.text
    assert message in resp.json()["error"]


def test_sql_select_works(api: str) -> None:
    resp = httpx.post(api + "/api/v1/query/sql", timeout=60, json={
        "sql": "SELECT verdict, count() AS n FROM flows GROUP BY verdict ORDER BY verdict"})
    assert resp.status_code == 200, resp.text
    assert {r["verdict"]: r["n"] for r in resp.json()["records"]} == {"FORWARDED": 40,
                                                                     "DROPPED": 20}


def test_import_refuses_bad_lines_with_their_numbers(api: str) -> None:
    body = "\n".join([json.dumps(event_to_response(FLOWS[0], "n")), "{not json", "[1]"])
    resp = httpx.post(api + "/api/v1/flows/import", content=body.encode(), headers=CREDENTIAL,
                      params={"first_line": "10"})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert "line 11: not JSON" in error and "line 12: a JSON list, not an object" in error


# -- CLI over the same store ----------------------------------------------------------------


def test_observe_since_prints_history(api: str) -> None:
    result = CliRunner().invoke(main, ["observe", "--server", api, "--since", "1h",
                                       "--verdict", "DROPPED", "-o", "json"])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 20
    last = CliRunner().invoke(main, ["observe", "--server", api, "--since", "1h", "--last",
                                     "3", "-o", "json"])
    got = [json.loads(line)["flow"]["uuid"] for line in last.stdout.splitlines()]
    assert got == [f.uuid for f in FLOWS[-3:]]


def test_export_then_import_round_trip(api: str, tmp_path: Path) -> None:
    out = tmp_path / "events.log"
    result = CliRunner().invoke(main, ["export", "--server", api, "--since", "1h",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert len(lines) == 60
    first = json.loads(lines[0])
    assert set(first) == {"flow", "node_name", "time"}
    assert "packets" not in first["flow"] and "bytes" not in first["flow"]
    parsed = parse_lines(lines)
    assert [f.uuid for f in parsed.flows] == [f.uuid for f in FLOWS]
    dry = CliRunner().invoke(main, ["import", "--server", api, "--dry-run", str(out)])
    assert dry.exit_code == 0 and "would import 60 flows, 0 non-flow lines skipped" in dry.stdout


def test_import_command_reports_bad_lines(api: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.log"
    bad.write_text(json.dumps(event_to_response(FLOWS[0], "n")) + "\n\n{\"flow\": 3}\n")
    result = CliRunner().invoke(main, ["import", "--server", api, str(bad)])
    assert result.exit_code == 2
    assert "line 3: `flow` is not an object" in result.stderr
    assert "nothing was imported" in result.stderr


@pytest.mark.parametrize("output", ["csv", "json", "table"])
def test_query_commands_print_dataframes(api: str, output: str) -> None:
    result = CliRunner().invoke(main, ["query", "drops", "--server", api, "--since", "1h",
                                       "-o", output])
    assert result.exit_code == 0, result.output
    assert "POLICY_DENIED" in result.stdout


def test_query_writes_parquet(api: str, tmp_path: Path) -> None:
    import pandas as pd

    out = tmp_path / "map.parquet"
    result = CliRunner().invoke(main, ["query", "service-map", "--server", api, "--since",
                                       "1h", "-n", "shop", "--out", str(out)])
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(out)
    assert len(df) > 0 and {"connections", "events"} <= set(df.columns)


def test_query_sql_command(api: str) -> None:
    result = CliRunner().invoke(main, ["query", "sql", "--server", api, "-o", "csv",
                                       "SELECT count() AS n FROM flows"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["n", "60"]


def test_openapi_fuzz_finds_no_server_errors(api: str) -> None:
    """schemathesis over every operation, bounded in examples and time: never a 500."""
    schemathesis = pytest.importorskip("schemathesis")
    proc = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{api}/openapi.json",
         "--checks", "not_a_server_error", "--max-examples", "15", "--max-failures", "5",
         "--request-timeout", "30", "--exclude-path", "/api/v1/flows/import",
         "--no-color"],
        capture_output=True, text=True, timeout=240)
    assert schemathesis
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Tested: 11" in proc.stdout, proc.stdout[-2000:]
