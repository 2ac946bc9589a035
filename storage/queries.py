"""SQL for the history aggregations: service map, drops, top talkers, time series.

Each builder returns (sql, parameters) over the flows table; `FlowStore`
runs it and hands back a DataFrame. Time bounds and namespaces are always
parameters. The endpoint "name" used by the map and the summaries is the
first workload, then the pod, then the reserved identity (world, host), so
traffic to and from outside the cluster shows up as its own node instead of
an empty string.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spyglass.collector.filters.sql import Params, Sql, all_of
from spyglass.model.enums import IDENTITY_HOST, IDENTITY_WORLD, Verdict
from spyglass.model.policy import CIDR_IDENTITY_BASE

PROTOCOL_NAME = ("transform(protocol, [1, 6, 17, 58, 132], "
                 "['ICMPv4', 'TCP', 'UDP', 'ICMPv6', 'SCTP'], toString(protocol))")
_NOT_REPLY = "ifNull(is_reply, 0) = 0"
DROP_BY = ("reason", "policy", "pod_pair")
TOP_BY = ("source", "destination", "pair")
TOP_METRICS = ("flows", "bytes")


def workload(side: str, labels: bool = True) -> str:
    """The service-map node name of one side of a flow.

    Without `labels`, world and host are told by identity alone (reserved 1 and 2, and
    CIDR identities, which are outside the cluster): it spares reading label arrays.
    """
    world = (f"has({side}_labels, 'reserved:world')" if labels
             else f"{side}_identity >= {CIDR_IDENTITY_BASE}")
    host = f"has({side}_labels, 'reserved:host')" if labels else "0"
    return (f"multiIf(notEmpty({side}_workloads), tupleElement({side}_workloads[1], 'name'), "
            f"{side}_pod_name != '', {side}_pod_name, "
            f"{side}_identity = {IDENTITY_WORLD} OR {world}, "
            f"'world', {side}_identity = {IDENTITY_HOST} OR {host}, "
            "'host', 'unknown')")


def endpoint_name(side: str) -> str:
    """A pod name, or world/host, or the address for endpoints outside the cluster."""
    return (f"multiIf({side}_pod_name != '', {side}_pod_name, "
            f"{side}_identity = {IDENTITY_HOST} OR has({side}_labels, 'reserved:host'), 'host', "
            f"isNotNull({side}_ip), if(ip_version = 4, replaceOne(IPv6NumToString("
            f"assumeNotNull({side}_ip)), '::ffff:', ''), IPv6NumToString(assumeNotNull("
            f"{side}_ip))), 'world')")


def time_range(since_ns: int | None, until_ns: int | None, p: Params) -> str:
    parts: list[str] = []
    if since_ns is not None:
        parts.append(f"time >= fromUnixTimestamp64Nano({p.add(int(since_ns), 'Int64')}, 'UTC')")
    if until_ns is not None:
        parts.append(f"time < fromUnixTimestamp64Nano({p.add(int(until_ns), 'Int64')}, 'UTC')")
    return all_of(parts)


def in_namespaces(namespaces: Sequence[str], p: Params) -> str:
    if not namespaces:
        return "1"
    ns = p.add(sorted(set(namespaces)), "Array(String)")
    return f"(has({ns}, source_namespace) OR has({ns}, destination_namespace))"


def service_map(since_ns: int | None, until_ns: int | None, namespaces: Sequence[str]) -> Sql:
    """Edges source workload -> destination workload:port/protocol, with their connections.

    An edge counts events and connections apart, because the events of one connection
    disagree: a SYN that policy denies is FORWARDED where it leaves the client (its own
    veth, from-endpoint) and DROPPED where it reaches the server, so the events alone make
    a denied edge look half open. A connection is the non-reply events that share
    (source ip, source port, destination ip, destination port, protocol) in the range; ICMP
    has no ports (they are 0), so there it is one per address pair. Its verdict is that of
    its last event (`argMax` on time); at the same nanosecond DROPPED beats AUDIT beats
    FORWARDED beats the rest (then the verdict's number), so the answer never depends on
    the order the rows are read in. Events whose `is_reply` is unknown count as requests.
    `forwarded`, `dropped` and `audit` count connections by that final verdict (other
    final verdicts are only in `connections`); `events` counts every event.

    Replies are left out: they are the same edge seen backwards, and would add an edge per
    ephemeral port.

    Three steps, for speed: rows are grouped by connection on cheap keys (the 5-tuple,
    namespace, pod, identity: LowCardinality, integers and addresses), then by endpoint
    pair; the node names, which read arrays of workloads and labels, are worked out once
    per pair rather than once per row (a pod fixes its workloads, so `any()` is exact
    there); world and host come from identities. The endpoint keys stay in the connection
    step so that a connection whose events were enriched differently is split by edge
    rather than pinned to whichever edge `any()` would pick.
    """
    p = Params()
    where = all_of([time_range(since_ns, until_ns, p), in_namespaces(namespaces, p), _NOT_REPLY])
    ends = ("source", "destination")
    keys = ", ".join(f"{side}_namespace, {side}_pod_name, {side}_identity" for side in ends)
    sides = ", ".join(
        f"{side}_namespace, {side}_pod_name, {side}_identity, "
        f"any({side}_workloads) AS {side}_workloads" for side in ends)
    verdicts = ("FORWARDED", "DROPPED", "AUDIT")
    # Later wins; at the same time DROPPED, AUDIT, FORWARDED, then the enum's number.
    rank = ("(time, multiIf(verdict = 'DROPPED', 3, verdict = 'AUDIT', 2, "
            "verdict = 'FORWARDED', 1, 0), CAST(verdict, 'Int8'))")
    by_final = ", ".join(f"countIf(final = '{v}') AS c_{v.lower()}" for v in verdicts)
    sums = ", ".join(f"sum(c_{v.lower()}) AS {v.lower()}" for v in verdicts)
    sql = f"""
        SELECT source_namespace AS src_namespace, {workload('source', False)} AS src_workload,
               destination_namespace AS dst_namespace,
               {workload('destination', False)} AS dst_workload,
               destination_port AS dst_port, {PROTOCOL_NAME} AS protocol_name,
               sum(c) AS connections, {sums}, sum(n) AS events, sum(b) AS bytes,
               min(first) AS first_seen, max(last) AS last_seen
        FROM (
            SELECT {sides}, destination_port, protocol,
                   count() AS c, {by_final}, sum(n) AS n, sum(b) AS b,
                   min(first) AS first, max(last) AS last
            FROM (
                SELECT {sides}, source_ip, source_port, destination_ip,
                       destination_port, protocol,
                       argMax(verdict, {rank}) AS final, count() AS n, sum(bytes) AS b,
                       min(time) AS first, max(time) AS last
                FROM flows WHERE {where}
                GROUP BY {keys}, source_ip, source_port, destination_ip, destination_port,
                         protocol)
            GROUP BY {keys}, destination_port, protocol)
        GROUP BY src_namespace, src_workload, dst_namespace, dst_workload, dst_port,
                 protocol_name
        ORDER BY connections DESC, events DESC, src_namespace, src_workload, dst_namespace,
                 dst_workload, dst_port"""
    return sql, p.values


def drops(since_ns: int | None, until_ns: int | None, by: str, namespaces: Sequence[str],
          limit: int) -> Sql:
    p = Params()
    where = all_of([time_range(since_ns, until_ns, p), in_namespaces(namespaces, p),
                    "verdict = 'DROPPED'"])
    totals = "count() AS drops, sum(packets) AS packets, sum(bytes) AS bytes, " \
             "min(time) AS first_seen, max(time) AS last_seen"
    lim = p.add(int(limit), "UInt32")
    if by == "reason":
        sql = f"""SELECT toString(drop_reason) AS reason, toUInt8(CAST(drop_reason, 'Int8') + 256)
                  AS code, {totals} FROM flows WHERE {where}
                  GROUP BY drop_reason ORDER BY drops DESC, reason LIMIT {lim}"""
    elif by == "policy":
        # A drop by the default deny names no rule: it is reported with policy "".
        def refs(direction: str) -> str:
            return (f"arrayMap(r -> ('{direction}', tupleElement(r, 'namespace'), "
                    f"tupleElement(r, 'name'), tupleElement(r, 'kind')), "
                    f"{direction.lower()}_denied_by)")
        sql = f"""SELECT tupleElement(ref, 1) AS direction,
                         tupleElement(ref, 2) AS policy_namespace,
                         tupleElement(ref, 3) AS policy_name,
                         tupleElement(ref, 4) AS policy_kind, {totals}
                  FROM flows
                  ARRAY JOIN if(empty(ingress_denied_by) AND empty(egress_denied_by),
                      [(toString(traffic_direction), '', '', '')],
                      arrayConcat({refs('INGRESS')}, {refs('EGRESS')})) AS ref
                  WHERE {where}
                  GROUP BY direction, policy_namespace, policy_name, policy_kind
                  ORDER BY drops DESC, policy_namespace, policy_name LIMIT {lim}"""
    else:
        sql = f"""SELECT source_namespace AS src_namespace, {endpoint_name('source')} AS src_pod,
                         destination_namespace AS dst_namespace,
                         {endpoint_name('destination')} AS dst_pod,
                         destination_port AS dst_port, {PROTOCOL_NAME} AS protocol,
                         toString(drop_reason) AS reason, {totals}
                  FROM flows WHERE {where}
                  GROUP BY src_namespace, src_pod, dst_namespace, dst_pod, dst_port, protocol,
                           reason
                  ORDER BY drops DESC, src_namespace, src_pod, dst_namespace, dst_pod
                  LIMIT {lim}"""
    return sql, p.values


def top(since_ns: int | None, until_ns: int | None, by: str, metric: str, limit: int) -> Sql:
    p = Params()
    where = time_range(since_ns, until_ns, p)
    keys: list[tuple[str, str]] = []
    if by in ("source", "pair"):
        keys += [("source_namespace", "src_namespace"), (endpoint_name("source"), "src_pod")]
    if by in ("destination", "pair"):
        keys += [("destination_namespace", "dst_namespace"),
                 (endpoint_name("destination"), "dst_pod")]
    select = ", ".join(f"{expr} AS {alias}" for expr, alias in keys)
    group = ", ".join(alias for _, alias in keys)
    other = "bytes" if metric == "flows" else "flows"
    sql = f"""SELECT {select}, count() AS flows, sum(bytes) AS bytes, sum(packets) AS packets
              FROM flows WHERE {where} GROUP BY {group}
              ORDER BY {metric} DESC, {other} DESC, {group}
              LIMIT {p.add(int(limit), 'UInt32')}"""
    return sql, p.values


VERDICT_COLUMNS = tuple(v.name.lower() for v in Verdict)


def timeseries(where: str, params: dict[str, Any], since_ns: int | None, until_ns: int | None,
               bucket_s: int) -> Sql:
    p = Params()
    p.values.update(params)
    cond = all_of([where, time_range(since_ns, until_ns, p)])
    counts = ", ".join(f"countIf(verdict = '{v.name}') AS {v.name.lower()}" for v in Verdict)
    # The bucket must not be aliased `time`: ClickHouse resolves WHERE's `time` to a SELECT
    # alias first, and the range would then cut on bucket starts instead of flow times.
    sql = f"""SELECT toStartOfInterval(time, toIntervalSecond({p.add(int(bucket_s), 'UInt32')}),
                                       'UTC') AS bucket,
                     count() AS flows, {counts}
              FROM flows WHERE {cond} GROUP BY bucket ORDER BY bucket"""
    return sql, p.values
