"""`query sql` against hostile and legitimate queries, on a real chDB store with canaries.

A canary table in Spyglass's own database, a canary database and a canary file hold
secrets that no accepted query may ever return, and no refusal may ever quote. The
hostile corpus includes every bypass of the first guard (issue 9), quoting tricks,
comments that split tokens, unicode look-alikes, joins and set operations to other
tables, every table function this ClickHouse has, and functions that read the server's
state. The legitimate corpus is what an analyst writes: GROUP BY, windows, arrays,
ARRAY JOIN, CTEs. A Hypothesis test mixes allowed and forbidden fragments and runs
whatever is accepted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.store import T0

from spyglass.model.enums import DropReason, LostEventSource, Verdict
from spyglass.model.flow import Endpoint, Flow, LostEvent, PolicyRef
from spyglass.storage import FlowStore, StoreError, flows_to_arrow
from spyglass.storage.sqlfunctions import AGGREGATES, ALLOWED, function_allowed
from spyglass.storage.sqlguard import Catalog, SqlRefused, parse_explain, vet

TABLE_SECRET = "CANARY-TABLE-5e1d"
DB_SECRET = "CANARY-DATABASE-77aa"
FILE_SECRET = "CANARY-FILE-91c2"
SECRETS = (TABLE_SECRET, DB_SECRET, FILE_SECRET)
#: The parser's own names, absent from system.functions.
PARSER_NAMES = {"lambda", "exists", "grouping", "untuple", "countDistinct"}


@pytest.fixture(scope="module")
def canary_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("canary") / "secret.txt"
    path.write_text(FILE_SECRET + "\n")
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowStore]:
    """Flows and lost events, plus a canary table beside them and a canary database."""
    store = FlowStore.open(f"chdb://{tmp_path_factory.mktemp('sg-store') / 'flows'}")
    c = store._client
    c.command("CREATE TABLE spyglass.canary (secret String) ENGINE = MergeTree ORDER BY secret")
    c.command(f"INSERT INTO spyglass.canary VALUES ('{TABLE_SECRET}')")
    c.command("CREATE DATABASE IF NOT EXISTS vault")
    c.command("CREATE TABLE vault.t (secret String) ENGINE = MergeTree ORDER BY secret")
    c.command(f"INSERT INTO vault.t VALUES ('{DB_SECRET}')")
    web = Endpoint(identity=300, namespace="shop", pod_name="web-0", labels=("k8s:app=web",))
    db = Endpoint(identity=301, namespace="shop", pod_name="db-0", labels=("k8s:app=db",))
    flows = [Flow(time_ns=T0 + i * 10**9, uuid=f"u{i}", source=web, destination=db,
                  source_ip="10.244.0.2", destination_ip="10.244.0.3", protocol=6,
                  destination_port=5432, bytes=100 + i,
                  verdict=Verdict.DROPPED if i % 4 == 0 else Verdict.FORWARDED,
                  drop_reason=DropReason.POLICY_DENIED if i % 4 == 0 else
                  DropReason.DROP_REASON_UNKNOWN,
                  ingress_denied_by=(PolicyRef("deny-web", "shop"),) if i % 4 == 0 else ())
             for i in range(40)]
    store.insert_arrow(flows_to_arrow(flows))
    store.insert_lost([LostEvent(time_ns=T0, source=LostEventSource.PERF_EVENT_RING_BUFFER,
                                 num_events_lost=3)], node_name="n1")
    try:
        yield store
    finally:
        store.close()


def refused(store: FlowStore, sql: str) -> str:
    """Run `sql`; it must be refused by the guard. Returns the message."""
    with pytest.raises(StoreError) as err:
        store.sql(sql, limit=100, timeout_s=5)
    message = str(err.value)
    assert message.startswith("query refused: "), message
    assert not any(s in message for s in SECRETS), message
    return message


# -- the hostile corpus ---------------------------------------------------------------------

HOSTILE = [
    # The bypasses reported in issue 9.
    ("dollar-quote-file", "SELECT $$'$$ AS q, file('{file}') --'"),
    ("dollar-quote-environ", "SELECT $$'$$ AS q, file('/proc/self/environ') --'"),
    ("comma-join-system", 'SELECT name FROM (SELECT 1) AS a, "system"."tables"'),
    ("backtick-settings", "SELECT * FROM `system`.settings"),
    ("system-disks", "SELECT * FROM system.disks"),
    ("information-schema", "SELECT * FROM information_schema.tables"),
    ("information-schema-upper", "SELECT * FROM INFORMATION_SCHEMA.TABLES"),
    ("schema-version", "SELECT * FROM schema_version"),
    ("url-cluster", "SELECT * FROM urlCluster('default', 'http://127.0.0.1:1/')"),
    ("merge-tree-index", "SELECT * FROM mergeTreeIndex('spyglass', 'flows')"),
    ("numbers", "SELECT * FROM numbers(10)"),
    ("server-state", "SELECT currentUser(), hostName(), version()"),
    # Quoting tricks and comments that split tokens.
    ("dollar-tag", "SELECT $t$ x $t$ AS q, file('{file}')"),
    ("escaped-quote", "SELECT '\\'' AS q, file('{file}')"),
    ("doubled-quote", "SELECT '''' AS q, file('{file}')"),
    ("comment-hides-quote", "SELECT 1 AS q, /* ' */ file('{file}') -- '"),
    ("nested-comment", "SELECT 1 /* a /* b */ c */, file('{file}')"),
    ("comment-in-name", "SELECT fi/**/le('{file}')"),
    ("hash-comment", "SELECT 1 # '\n, file('{file}')"),
    ("double-quoted-function", 'SELECT "file"(\'{file}\')'),
    ("backtick-function", "SELECT `file`('{file}')"),
    ("upper-case-function", "SELECT FILE('{file}')"),
    ("unicode-function", "SELECT ｆile('{file}')"),
    ("unicode-table", "SELECT * FROM ｓystem.tables"),
    ("newline-before-paren", "SELECT file\n('{file}')"),
    ("table-function-file", "SELECT * FROM file('{file}', 'LineAsString')"),
    ("lambda-file", "SELECT arrayMap(x -> file(x), ['{file}'])"),
    # Other tables: joins, set operations, subqueries, IN.
    ("canary-table", "SELECT * FROM canary"),
    ("canary-qualified", "SELECT * FROM spyglass.canary"),
    ("canary-database", "SELECT * FROM vault.t"),
    ("comma-join-canary", "SELECT * FROM flows, canary"),
    ("cross-join-system", "SELECT * FROM flows CROSS JOIN system.tables"),
    ("join-users", "SELECT * FROM flows AS f JOIN system.users AS u ON 1 = 1"),
    ("left-join-vault", "SELECT f.uuid, v.secret FROM flows AS f LEFT JOIN vault.t AS v ON 1"),
    ("in-table", "SELECT 1 FROM flows WHERE 'x' IN canary"),
    ("in-system-table", "SELECT 1 FROM flows WHERE uuid IN system.tables"),
    ("not-in-table", "SELECT 1 FROM flows WHERE uuid NOT IN vault.t"),
    ("scalar-subquery", "SELECT (SELECT secret FROM canary)"),
    ("in-subquery", "SELECT * FROM flows WHERE uuid IN (SELECT secret FROM canary)"),
    ("exists-subquery", "SELECT * FROM flows WHERE EXISTS (SELECT * FROM canary)"),
    ("union", "SELECT uuid FROM flows UNION ALL SELECT secret FROM canary"),
    ("union-distinct", "SELECT uuid FROM flows UNION DISTINCT SELECT name FROM system.tables"),
    ("intersect", "SELECT uuid FROM flows INTERSECT SELECT secret FROM canary"),
    ("except", "SELECT uuid FROM flows EXCEPT SELECT secret FROM vault.t"),
    ("cte-of-canary", "WITH x AS (SELECT * FROM canary) SELECT * FROM x"),
    ("cte-shadowing-canary", "WITH canary AS (SELECT 1) SELECT * FROM canary"),
    ("with-scalar", "WITH (SELECT secret FROM canary) AS s SELECT s"),
    ("nested-subqueries", "SELECT * FROM (SELECT * FROM (SELECT * FROM (SELECT secret FROM "
                          "canary)))"),
    ("array-join-subquery", "SELECT * FROM flows ARRAY JOIN (SELECT groupArray(secret) FROM "
                            "canary) AS s"),
    ("limit-subquery", "SELECT * FROM flows LIMIT (SELECT count() FROM canary)"),
    ("window-subquery", "SELECT count() OVER (PARTITION BY (SELECT secret FROM canary)) "
                        "FROM flows"),
    ("qualified-asterisk", "SELECT system.tables.* FROM flows"),
    ("qualified-column", "SELECT system.tables.name FROM flows"),
    ("system-one", "SELECT * FROM system.one"),
    # Escaping the wrapper the guard puts around the query.
    ("wrapper-escape-join", "SELECT 1) AS a, system.tables AS b, (SELECT 1"),
    ("wrapper-escape-union", "SELECT 1) UNION ALL (SELECT name FROM system.tables"),
    ("wrapper-escape-statement", "SELECT 1) ; SELECT file('{file}') AS x FROM (SELECT 1"),
    # Forged parse lines through a quoted alias.
    ("alias-injection", "SELECT 1 AS `a) (children 1)\n    Function count (children 1)\n"
                        "     ExpressionList`, file('{file}')"),
    ("identifier-newline", "SELECT `uuid\n    TableIdentifier flows` FROM canary"),
    # Clauses and statements.
    ("settings", "SELECT * FROM flows SETTINGS readonly = 0"),
    ("settings-time", "SELECT * FROM flows SETTINGS max_execution_time = 100000"),
    ("format", "SELECT * FROM flows FORMAT JSON"),
    ("format-native", "SELECT * FROM flows FORMAT Native"),
    ("outfile", "SELECT * FROM flows INTO OUTFILE '/tmp/spyglass-outfile'"),
    ("outfile-append", "SELECT * FROM flows INTO OUTFILE '/tmp/spyglass-outfile' APPEND"),
    ("two-statements", "SELECT 1; SELECT file('{file}')"),
    ("drop-after", "SELECT 1; DROP TABLE flows"),
    ("insert", "INSERT INTO flows SELECT * FROM flows"),
    ("alter", "ALTER TABLE flows DELETE WHERE 1"),
    ("drop", "DROP TABLE flows"),
    ("truncate", "TRUNCATE TABLE flows"),
    ("create", "CREATE TABLE x (a String) ENGINE = Memory"),
    ("system-reload", "SYSTEM RELOAD CONFIG"),
    ("kill", "KILL QUERY WHERE 1"),
    ("set", "SET readonly = 0"),
    ("use", "USE system"),
    ("show", "SHOW TABLES FROM system"),
    ("describe", "DESCRIBE TABLE canary"),
    ("explain", "EXPLAIN SELECT * FROM canary"),
    ("grant", "GRANT ALL ON *.* TO default"),
    ("optimize", "OPTIMIZE TABLE flows FINAL"),
    ("exists-table", "EXISTS TABLE canary"),
    ("parameter", "SELECT {x:String}"),
    ("apply", "SELECT * APPLY file FROM flows"),
    ("columns-apply", "SELECT COLUMNS('uuid') APPLY(file) FROM flows"),
    ("nul", "SELECT 1\x00"),
    ("empty", "   "),
    ("too-long", "SELECT " + " + ".join(["1"] * 12000)),
]

DANGEROUS_FUNCTIONS = [
    "currentUser()", "hostName()", "version()", "uptime()", "getSetting('max_threads')",
    "getMacro('x')", "getServerPort('tcp_port')", "currentDatabase()", "dictGet('d', 'a', 1)",
    "joinGet('t', 'a', 1)", "hasColumnInTable('system', 'tables', 'name')",
    "filesystemAvailable()", "serverUUID()", "getClientHTTPHeader('x')", "showCertificate()",
    "sleep(1)", "sleepEachRow(1)", "throwIf(1)", "aiGenerate('x')", "addressToSymbol(1)",
    "fuzzQuery('SELECT 1')", "globalVariable('max_allowed_packet')", "getOSKernelVersion()",
    "buildId()", "tcpPort()", "displayName()", "timezone()", "getMergeTreeSetting('x')",
    "formatQuery('SELECT 1')", "transactionID()", "queryID()", "connectionId()",
    "evalMLMethod(1)", "file('{file}')", "initializeAggregation('sum', 1)",
]


@pytest.mark.parametrize("sql", [pytest.param(q, id=i) for i, q in HOSTILE])
def test_hostile_queries_are_refused(store: FlowStore, canary_file: Path, sql: str) -> None:
    refused(store, sql.replace("{file}", str(canary_file)))


@pytest.mark.parametrize("call", DANGEROUS_FUNCTIONS)
def test_functions_that_read_outside_the_tables_are_refused(store: FlowStore,
                                                            canary_file: Path,
                                                            call: str) -> None:
    message = refused(store, f"SELECT {call.replace('{file}', str(canary_file))} FROM flows")
    assert "not allowed" in message


def test_every_table_function_is_refused(store: FlowStore, canary_file: Path) -> None:
    names = [r[0] for r in store._client.query(
        "SELECT name FROM system.table_functions").result_rows]
    assert len(names) > 50
    for name in names:
        message = refused(store, f"SELECT * FROM {name}('{canary_file}')")
        assert "table function" in message or "could not parse" in message, (name, message)


def test_the_corpus_is_big_enough() -> None:
    assert len(HOSTILE) + len(DANGEROUS_FUNCTIONS) >= 60


@pytest.mark.parametrize(("sql", "why"), [
    pytest.param("SELECT * FROM system.tables", "system.tables is not allowed", id="table"),
    pytest.param("SELECT file('x')", "function file() is not allowed", id="function"),
    pytest.param("SELECT * FROM numbers(1)", "table function numbers() is not allowed",
                 id="table-function"),
    pytest.param("SELECT 1; SELECT 2", "only one statement", id="statements"),
    pytest.param("DROP TABLE flows", "only SELECT queries are allowed, not DROP", id="drop"),
    pytest.param("SELECT 1 FORMAT CSV", "FORMAT is not allowed", id="format"),
    pytest.param("SELECT 1 INTO OUTFILE 'x'", "INTO OUTFILE is not allowed", id="outfile"),
    pytest.param("SELECT 1 SETTINGS max_threads = 1", "SETTINGS is not allowed", id="settings"),
    pytest.param("SELECT 1 FROM vault.t", "vault.t is not allowed", id="database"),
    pytest.param("SELECT 1 +", "could not parse", id="syntax"),
])
def test_refusals_name_what_and_why(store: FlowStore, sql: str, why: str) -> None:
    assert why in refused(store, sql)


def test_nothing_refused_wrote_a_file() -> None:
    assert not Path("/tmp/spyglass-outfile").exists()


# -- the legitimate corpus ------------------------------------------------------------------

LEGIT = [
    ("group-by", "SELECT verdict, count() AS n FROM flows GROUP BY verdict ORDER BY n DESC"),
    ("qualified", "select count() from spyglass.flows;"),
    ("upper-case", "SELECT COUNT(*), SUM(bytes), AVG(bytes) FROM flows"),
    ("where-time", "SELECT count() FROM flows WHERE time > now() - INTERVAL 1 DAY"),
    ("having", "SELECT source_pod_name, count() AS n FROM flows GROUP BY source_pod_name "
               "HAVING n > 1"),
    ("conditional-aggregates", "SELECT countIf(verdict = 'DROPPED'), sumIf(bytes, verdict = "
                               "'FORWARDED'), avgIf(bytes, protocol = 6) FROM flows"),
    ("quantiles", "SELECT quantile(0.9)(bytes), quantiles(0.5, 0.99)(bytes), median(bytes), "
                  "uniqExact(uuid), topK(3)(destination_port) FROM flows"),
    ("arg-max", "SELECT argMax(uuid, time), any(source_pod_name), groupArray(3)(uuid) "
                "FROM flows"),
    ("window-row-number", "SELECT uuid, row_number() OVER (PARTITION BY verdict ORDER BY "
                          "time) AS rn FROM flows"),
    ("window-running-sum", "SELECT time, sum(bytes) OVER (ORDER BY time ROWS BETWEEN 5 "
                           "PRECEDING AND CURRENT ROW) AS s FROM flows"),
    ("window-lag", "SELECT time, lagInFrame(bytes) OVER (ORDER BY time ROWS BETWEEN "
                   "UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS prev FROM flows"),
    ("named-window", "SELECT count() OVER w FROM flows WINDOW w AS (PARTITION BY "
                     "source_pod_name)"),
    ("arrays", "SELECT has(source_labels, 'k8s:app=web'), length(source_labels), "
               "arrayFilter(l -> l LIKE 'k8s:%', source_labels), arrayMap(l -> upper(l), "
               "destination_labels) FROM flows"),
    ("array-join", "SELECT l, count() FROM flows ARRAY JOIN source_labels AS l GROUP BY l"),
    ("left-array-join", "SELECT uuid, p.name FROM flows LEFT ARRAY JOIN ingress_denied_by "
                        "AS p"),
    ("array-join-function", "SELECT arrayJoin(destination_labels) AS l, count() FROM flows "
                            "GROUP BY l"),
    ("tuple-elements", "SELECT ingress_denied_by.name, ingress_denied_by.namespace FROM flows"),
    ("cte", "WITH d AS (SELECT * FROM flows WHERE verdict = 'DROPPED') SELECT count() FROM d"),
    ("two-ctes", "WITH a AS (SELECT uuid FROM flows), b AS (SELECT uuid FROM a) SELECT "
                 "count() FROM b"),
    ("cte-scalar", "WITH 10 AS lim SELECT * FROM flows LIMIT lim"),
    ("in-subquery", "SELECT count() FROM flows WHERE uuid IN (SELECT uuid FROM flows) -- hi"),
    ("in-cte", "WITH d AS (SELECT uuid FROM flows) SELECT count() FROM flows WHERE uuid IN d"),
    ("lost-events", "SELECT sum(num_events_lost) FROM lost_events"),
    ("join-lost", "SELECT f.node_name, l.num_events_lost FROM flows AS f LEFT JOIN "
                  "lost_events AS l ON f.node_name = l.node_name LIMIT 5"),
    ("union", "SELECT 'flows' AS t, count() FROM flows UNION ALL SELECT 'lost', count() "
              "FROM lost_events"),
    ("buckets", "SELECT toStartOfInterval(time, INTERVAL 5 MINUTE) AS b, count() FROM flows "
                "GROUP BY b ORDER BY b"),
    ("dates", "SELECT formatDateTime(time, '%F %T'), toHour(time), dateDiff('second', "
              "min(time), max(time)) FROM flows GROUP BY time"),
    ("addresses", "SELECT IPv6NumToString(source_ip), isIPAddressInRange(IPv6NumToString("
                  "destination_ip), '::ffff:10.244.0.0/112') FROM flows"),
    ("case", "SELECT CASE WHEN bytes > 120 THEN 'big' ELSE 'small' END AS size, multiIf("
             "protocol = 6, 'tcp', protocol = 17, 'udp', 'other'), if(is_reply, 1, 0), "
             "coalesce(destination_service_name, '') FROM flows"),
    ("strings", "SELECT lower(source_pod_name), concat(source_namespace, '/', "
                "source_pod_name), splitByChar('-', source_pod_name)[1], extract(uuid, "
                "'[0-9]+'), uuid LIKE 'u1%', match(uuid, '^u[0-9]$') FROM flows"),
    ("limit-by", "SELECT verdict, uuid FROM flows ORDER BY time DESC LIMIT 2 BY verdict"),
    ("rollup", "SELECT verdict, protocol, count() FROM flows GROUP BY ROLLUP(verdict, "
               "protocol)"),
    ("totals", "SELECT verdict, count() FROM flows GROUP BY verdict WITH TOTALS"),
    ("grouping-sets", "SELECT verdict, protocol, count() FROM flows GROUP BY GROUPING SETS "
                      "((verdict), (protocol))"),
    ("distinct", "SELECT DISTINCT source_pod_name, destination_port FROM flows"),
    ("columns-matcher", "SELECT COLUMNS('^source_pod') FROM flows"),
    ("except-columns", "SELECT * EXCEPT (uuid, source_labels) FROM flows LIMIT 3"),
    ("self-join", "SELECT a.uuid FROM flows AS a INNER JOIN flows AS b ON a.uuid = b.uuid "
                  "LIMIT 3"),
    ("casts", "SELECT toString(verdict), CAST(bytes AS Float64) / 2, toUInt16(destination_port)"
              ", bytes::String FROM flows"),
    ("hashes", "SELECT cityHash64(uuid) % 10, sipHash64(source_pod_name) FROM flows"),
    ("subquery-from", "SELECT n FROM (SELECT count() AS n FROM flows)"),
]


@pytest.mark.parametrize("sql", [pytest.param(q, id=i) for i, q in LEGIT])
def test_legitimate_queries_are_accepted(store: FlowStore, sql: str) -> None:
    df = store.sql(sql, limit=1000, timeout_s=10)
    assert len(df.columns) >= 1


def test_the_legitimate_corpus_returns_data(store: FlowStore) -> None:
    df = store.sql("SELECT verdict, count() AS n FROM flows GROUP BY verdict ORDER BY verdict")
    assert df.to_dict("records") == [{"verdict": "FORWARDED", "n": 30},
                                     {"verdict": "DROPPED", "n": 10}]


def test_the_row_cap_holds_through_the_wrapper(store: FlowStore) -> None:
    assert len(store.sql("SELECT * FROM flows", limit=7)) == 7
    assert len(store.sql("SELECT uuid FROM flows UNION ALL SELECT uuid FROM flows",
                         limit=5)) == 5


# -- the allowlist itself ---------------------------------------------------------------------

def test_every_allowed_function_exists_and_none_is_a_table_function(store: FlowStore) -> None:
    rows = store._client.query("SELECT name FROM system.functions").result_rows
    names = {r[0] for r in rows}
    lower = {n.lower() for n in names}
    missing = sorted(n for n in ALLOWED - PARSER_NAMES if n.lower() not in lower)
    assert missing == []
    tables = {r[0].lower() for r in store._client.query(
        "SELECT name FROM system.table_functions").result_rows}
    assert sorted(n for n in ALLOWED if n.lower() in tables) == []


def test_case_insensitive_matching_admits_only_aliases_of_allowed_functions(
        store: FlowStore) -> None:
    """No ClickHouse function that differs from an allowed one only in case is another one."""
    rows = store._client.query(
        "SELECT name, alias_to, case_insensitive FROM system.functions").result_rows
    allowed_lower = {n.lower() for n in ALLOWED}
    by_name = {r[0]: r for r in rows}
    for name, alias_to, _ in rows:
        if name.lower() in allowed_lower and name not in ALLOWED:
            target = alias_to or name
            same = [a for a in ALLOWED if a.lower() == name.lower()]
            assert any(by_name.get(a, (a, "", 1))[1] in ("", target) or a == target
                       or by_name.get(a, (a, "", 1))[2] for a in same), name


def test_no_allowed_function_is_of_a_forbidden_kind(store: FlowStore) -> None:
    rows = store._client.query("SELECT name, categories FROM system.functions").result_rows
    forbidden = {"Dictionary", "Introspection", "Embedded Dictionary", "AI", "Machine Learning",
                 "Encryption", "Internal"}
    hits = sorted(n for n, cat in rows if cat in forbidden and function_allowed(n))
    assert hits == ["caseWithExpression"]  # what `CASE x WHEN … END` parses into


@pytest.mark.parametrize(("name", "ok"), [
    ("count", True), ("COUNT", True), ("countIf", True), ("sumArrayIf", True),
    ("uniqExactOrNull", True), ("sumSimpleState", True), ("quantileIf", True),
    ("file", False), ("fileIf", False), ("Ifs", False), ("getSetting", False),
    ("dictGetString", False), ("hostNameIf", False), ("urlArray", False),
])
def test_combinators_extend_only_aggregates(name: str, ok: bool) -> None:
    assert function_allowed(name) is ok


def test_aggregates_are_all_on_the_list() -> None:
    assert AGGREGATES <= ALLOWED


# -- reading the printout strictly (no server needed) ---------------------------------------

CATALOG = Catalog("spyglass", frozenset({"system", "spyglass", "default"}),
                  frozenset({"flows", "lost_events", "schema_version"}))
GOOD = ["SelectWithUnionQuery (children 2)",
        " ExpressionList (children 1)",
        "  SelectQuery (children 2)",
        "   ExpressionList (children 1)",
        "    Function count (children 1)",
        "     ExpressionList",
        "   TablesInSelectQuery (children 1)",
        "    TablesInSelectQueryElement (children 1)",
        "     TableExpression (children 1)",
        "      TableIdentifier flows",
        " Identifier Native"]


def test_a_clean_printout_is_read() -> None:
    nodes = vet(GOOD, CATALOG)
    assert [n.kind for n in nodes][:3] == ["SelectWithUnionQuery", "ExpressionList",
                                           "SelectQuery"]
    assert nodes[4].name == "count" and nodes[9].name == "flows"


@pytest.mark.parametrize(("lines", "why"), [
    pytest.param([*GOOD[:5], "     ExpressionList (children 1)", *GOOD[6:]], "read back",
                 id="child-count-short"),
    pytest.param([GOOD[0], "   ExpressionList", *GOOD[2:]], "read back", id="indent-jump"),
    pytest.param([*GOOD[:4], "    Function count (alias we ird", *GOOD[5:]], "read back",
                 id="unclosed-alias"),
    pytest.param([*GOOD[:4], "    Identifier we ird", *GOOD[6:]], "read back",
                 id="spaced-name"),
    pytest.param([*GOOD[:4], "    Literal 'x", *GOOD[6:]], "read back", id="open-string"),
    pytest.param([*GOOD, "SelectWithUnionQuery"], "read back", id="second-root"),
    pytest.param([*GOOD[:4], "    Mystery (children 1)", *GOOD[5:]], "does not allow",
                 id="unknown-kind"),
    pytest.param([*GOOD[:9], "      TableIdentifier schema_version", GOOD[10]],
                 "schema_version is not allowed", id="other-table"),
    pytest.param([*GOOD[:9], "      TableIdentifier default.flows", GOOD[10]],
                 "not allowed", id="other-database"),
    pytest.param([*GOOD[:9], "      Function numbers (children 1)", "       ExpressionList",
                  GOOD[10]], "table function", id="table-function"),
    pytest.param(["Explain EXPLAIN (children 1)", *(" " + g for g in GOOD)],
                 "EXPLAIN is not allowed", id="explain-root"),
    pytest.param(["InsertQuery (children 1)", *GOOD[1:-1]], "does not allow", id="insert"),
    pytest.param(["SelectWithUnionQuery (children 3)", *GOOD[1:-1], " Literal '/tmp/x'",
                  " Identifier Native"], "INTO OUTFILE", id="outfile"),
    pytest.param([*GOOD[:3], "   ExpressionList (children 1)", "    Asterisk", "   Set",
                  GOOD[10]], "read back|SETTINGS", id="settings"),
    pytest.param([*GOOD[:-1], " Identifier JSON"], "FORMAT", id="format"),
    pytest.param([], "no parse", id="empty"),
])
def test_printouts_that_do_not_add_up_are_refused(lines: list[str], why: str) -> None:
    with pytest.raises(SqlRefused, match=why):
        vet(lines, CATALOG)


def test_every_line_is_checked_even_if_the_structure_is_forged() -> None:
    """Extra lines that a crafted alias prints are vetted like real ones."""
    forged = ["SelectWithUnionQuery (children 2)",
              " ExpressionList (children 1)",
              "  SelectQuery (children 1)",
              "   ExpressionList (children 1)",
              "    Literal UInt64_1 (alias a) (children 1)",
              "     Function file (children 1)",
              "      ExpressionList (children 1)",
              "       Literal 'x'",
              " Identifier Native"]
    with pytest.raises(SqlRefused, match="file"):
        vet(forged, CATALOG)


def test_literals_with_brackets_quotes_and_aliases_are_read() -> None:
    lines = ["SelectWithUnionQuery (children 2)",
             " ExpressionList (children 1)",
             "  SelectQuery (children 1)",
             "   ExpressionList (children 3)",
             "    Literal Array_['a) (children 9)', 'b\\'c'] (alias x)",
             "    Literal Tuple_(UInt64_1, 'x y') (alias y)",
             "    Literal 'it\\'s (alias z)' (alias z)",
             " Identifier Native"]
    nodes = parse_explain(lines)
    assert [n.alias for n in nodes[4:7]] == ["x", "y", "z"]


# -- property: whatever is accepted never reads a canary ------------------------------------

SELECTS = st.sampled_from([
    "uuid", "count()", "verdict", "toString(bytes)", "source_labels", "secret",
    "(SELECT secret FROM canary)", "(SELECT secret FROM vault.t)", "file('{file}')",
    "name", "$$'$$", "'''", "arrayMap(x -> x, source_labels)", "hostName()"])
SOURCES = st.sampled_from([
    "flows", "lost_events", "spyglass.flows", "canary", "spyglass.canary", "vault.t",
    "system.tables", "`system`.`tables`", '"system"."tables"', "information_schema.tables",
    "numbers(3)", "file('{file}', 'LineAsString')", "(SELECT * FROM canary)",
    "(SELECT * FROM flows)", "flows, canary", "flows CROSS JOIN vault.t", "t"])
WHERES = st.sampled_from([
    "", " WHERE 1", " WHERE uuid IN canary", " WHERE uuid IN (SELECT secret FROM canary)",
    " WHERE verdict = 'DROPPED'", " WHERE EXISTS (SELECT 1 FROM vault.t)", " -- '",
    " /* ' */", " WHERE uuid IN t"])
TAILS = st.sampled_from([
    "", " LIMIT 3", " UNION ALL SELECT secret FROM canary", " SETTINGS readonly = 0",
    " FORMAT JSON", "; SELECT secret FROM canary", " INTERSECT SELECT secret FROM canary"])
WRAPS = st.sampled_from(["{q}", "WITH t AS (SELECT secret FROM canary) {q}",
                         "WITH t AS (SELECT uuid AS secret FROM flows) {q}",
                         "SELECT * FROM ({q})", "{q}) UNION ALL (SELECT 1"])


@settings(max_examples=150, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture])
@given(select=SELECTS, source=SOURCES, where=WHERES, tail=TAILS, wrap=WRAPS)
def test_accepted_queries_never_read_outside_the_two_tables(
        store: FlowStore, canary_file: Path, select: str, source: str, where: str, tail: str,
        wrap: str) -> None:
    sql = wrap.replace("{q}", f"SELECT {select} FROM {source}{where}{tail}")
    sql = sql.replace("{file}", str(canary_file))
    try:
        df = store.sql(sql, limit=50, timeout_s=5)
    except StoreError as exc:
        assert not any(s in str(exc) for s in SECRETS), (sql, str(exc))
        return
    text = json.dumps(df.astype(str).to_dict("records"))
    assert not any(s in text for s in SECRETS), (sql, text)
