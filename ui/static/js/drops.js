// Drops: over time, by reason, by policy and by pod pair.
//
// The store's aggregations answer (GET /api/v1/drops, /timeseries) when the
// agent has a store; without one the same tables are computed from the drops
// still in the ring, and the view says so. Every row leads to its flows and
// to explain, which is where a drop gets fixed.

import { apiGet, isNoStore } from "./api.js";
import { bucketFlows, bucketFor, normaliseSeries, verdictChart } from "./charts.js";
import { fromEntries } from "./filters.js";
import * as fmt from "./flowfmt.js";
import { fmtNumber, getParam, h, isoTime, parseDuration, setParams } from "./util.js";

const RING_MAX = 65535;

/** A drop's endpoint as the store names it: the pod, else world/host, else the address. */
function endpointLabel(ep, ip) {
  ep = ep || {};
  if (ep.pod_name) return ep.pod_name;
  const labels = ep.labels || [];
  if (labels.includes("reserved:host") || ep.identity === 1) return "host";
  return ip || "world";
}

/** Aggregate drop flows into the store's three /drops tables (same columns), for an
 * agent without a store. */
export function aggregateDrops(flows) {
  const tables = { reason: new Map(), policy: new Map(), pod_pair: new Map() };
  const bump = (m, row) => {
    const key = JSON.stringify(row);
    const cur = m.get(key) || { ...row, drops: 0 };
    cur.drops++;
    m.set(key, cur);
  };
  for (const f of flows) {
    if (f.verdict !== "DROPPED") continue;
    const reason = fmt.dropReason(f) || "DROP_REASON_UNKNOWN";
    bump(tables.reason, { reason });
    const direction = (f.traffic_direction || "").replace("TRAFFIC_DIRECTION_", "");
    const refs = direction === "EGRESS" ? f.egress_denied_by : f.ingress_denied_by;
    for (const p of refs && refs.length ? refs : [{ namespace: "", name: "", kind: "" }]) {
      bump(tables.policy, { direction, policy_namespace: p.namespace || "", policy_name: p.name || "",
        policy_kind: p.kind || "" });
    }
    const src = f.source || {};
    const dst = f.destination || {};
    bump(tables.pod_pair, { src_namespace: src.namespace || "", src_pod: endpointLabel(src, (f.IP || {}).source),
      dst_namespace: dst.namespace || "", dst_pod: endpointLabel(dst, (f.IP || {}).destination),
      dst_port: fmt.dstPort(f), protocol: fmt.protocol(f), reason });
  }
  const sorted = (m) => [...m.values()].sort((a, b) => b.drops - a.drops);
  return { reason: sorted(tables.reason), policy: sorted(tables.policy), pod_pair: sorted(tables.pod_pair) };
}

function count(r) {
  return Number(r.drops ?? r.count ?? 0);
}

/** Filter-bar entries for one side of a pod-pair row. */
function sideEntries(side, ns, name) {
  if (ns && name) return [{ side, kind: "pod", value: `${ns}/${name}` }];
  if (name === "world" || name === "host") return [{ side, kind: "identity", value: name }];
  if (name && name !== "unknown") return [{ side, kind: "ip", value: name }];
  return [];
}

/** Filter-bar entries for a pod-pair row (both sides, port, protocol). */
export function pairEntries(r) {
  const e = [...sideEntries("from", r.src_namespace, r.src_pod), ...sideEntries("to", r.dst_namespace, r.dst_pod)];
  if (r.dst_port) e.push({ side: "to", kind: "port", value: r.dst_port });
  if (r.protocol && /^(tcp|udp|sctp|icmpv4|icmpv6)$/i.test(r.protocol)) e.push({ kind: "protocol", value: r.protocol.toLowerCase() });
  return e;
}

/** Entries for a policy row: its drops, on the side the policy guards. */
function policyEntries(r) {
  const e = [{ kind: "verdict", value: "DROPPED" }];
  const dir = (r.direction || "").toUpperCase();
  if (dir === "INGRESS" || dir === "EGRESS") e.push({ kind: "traffic-direction", value: dir.toLowerCase() });
  if (r.policy_namespace) e.push({ side: dir === "EGRESS" ? "from" : "to", kind: "namespace", value: r.policy_namespace });
  return e;
}

export class DropsView {
  constructor(root, { openFlows }) {
    this.root = root;
    this.openFlows = openFlows;
    this.range = getParam("drops_range") || "1h";
    this._build();
  }

  _build() {
    this.rangeSel = h("select", { id: "drops-range", onchange: () => { this.range = this.rangeSel.value; setParams({ drops_range: this.range }); this.load(); } },
      ...["15m", "1h", "24h"].map((r) => h("option", { value: r, selected: r === this.range }, `Last ${r}`)));
    this.note = h("div", { class: "note", id: "drops-note", hidden: true });
    this.chart = h("div", { class: "chart", id: "drops-chart" });
    this.byReason = h("div", { id: "drops-by-reason" });
    this.byPolicy = h("div", { id: "drops-by-policy" });
    this.byPair = h("div", { id: "drops-by-pair" });
    this.root.append(
      h("div", { class: "toolbar" }, h("label", {}, "Range ", this.rangeSel),
        h("button", { onclick: () => this.load() }, "Refresh")),
      this.note, h("h3", {}, "Drops over time"), this.chart,
      h("div", { class: "drops-grid" },
        h("section", {}, h("h3", {}, "By reason"), this.byReason),
        h("section", {}, h("h3", {}, "By policy"), this.byPolicy)),
      h("section", {}, h("h3", {}, "Top dropped pod pairs"), this.byPair));
  }

  show() {
    this.load();
  }

  hide() {}

  async load() {
    const secs = parseDuration(this.range);
    const until = Date.now();
    const since = until - secs * 1000;
    const window = [["since", isoTime(since)], ["until", isoTime(until)]];
    let tables;
    let series;
    try {
      const [reason, policy, pair, ts] = await Promise.all([
        apiGet("/drops", [...window, ["by", "reason"]]),
        apiGet("/drops", [...window, ["by", "policy"]]),
        apiGet("/drops", [...window, ["by", "pod_pair"]]),
        apiGet("/timeseries", [...window, ["bucket", `${bucketFor(secs)}s`], ["verdict", "DROPPED"]]),
      ]);
      const rows = (b) => (Array.isArray(b) ? b : b.records || b.rows || []);
      tables = { reason: rows(reason), policy: rows(policy), pod_pair: rows(pair) };
      series = normaliseSeries(ts);
      this._note("");
    } catch (err) {
      if (!isNoStore(err)) {
        this._note(err.message);
        return;
      }
      // No store: compute the same from the drops still in the ring.
      const body = await apiGet("/flows", [["last", String(RING_MAX)], ["verdict", "DROPPED"]]);
      const flows = body.flows.filter((m) => m.flow).map((m) => m.flow).filter((f) => Date.parse(f.time) >= since);
      tables = aggregateDrops(flows);
      series = bucketFlows(flows, since, until, bucketFor(secs));
      this._note(`No flow store here: these are the ${fmtNumber(flows.length)} drops still in the ring.`);
    }
    verdictChart(this.chart, series, { height: 160, verdicts: ["DROPPED"] });
    this._table(this.byReason, ["Reason", "Drops"], tables.reason,
      (r) => [r.reason || "?"],
      (r) => [{ kind: "drop-reason", value: r.reason }]);
    this._table(this.byPolicy, ["Policy", "Direction", "Drops"], tables.policy,
      (r) => [policyLabel(r), (r.direction || "").toLowerCase()], policyEntries);
    this._table(this.byPair, ["Source", "Destination", "Reason", "Drops"], tables.pod_pair.slice(0, 20),
      (r) => [pairSide(r.src_namespace, r.src_pod),
        pairSide(r.dst_namespace, r.dst_pod) + (r.dst_port ? `:${r.dst_port}` : "") + (r.protocol ? ` ${r.protocol}` : ""),
        r.reason || ""],
      (r) => [...pairEntries(r), { kind: "verdict", value: "DROPPED" }]);
  }

  _note(msg) {
    this.note.textContent = msg;
    this.note.hidden = !msg;
  }

  _table(box, heads, rows, cells, entries) {
    if (!rows.length) {
      box.replaceChildren(h("div", { class: "muted" }, "No drops in this range."));
      return;
    }
    const body = rows.map((r) => {
      const filter = fromEntries(entries(r).filter((e) => e.value !== undefined && e.value !== ""));
      return h("tr", {}, ...cells(r).map((c) => h("td", {}, c)), h("td", { class: "num" }, fmtNumber(count(r))),
        h("td", { class: "links" },
          h("a", { href: "#", class: "to-flows", onclick: (ev) => { ev.preventDefault(); this.openFlows(filter, false); } }, "flows"),
          " · ",
          h("a", { href: "#", class: "to-explain", onclick: (ev) => { ev.preventDefault(); this.openFlows(filter, true); } }, "explain")));
    });
    box.replaceChildren(h("table", { class: "grid" },
      h("thead", {}, h("tr", {}, ...heads.map((t) => h("th", {}, t)), h("th", {}, ""))),
      h("tbody", {}, body)));
  }
}

function policyLabel(r) {
  if (!r.policy_name) return "(default deny: no rule allows it)";
  return `${r.policy_namespace ? r.policy_namespace + "/" : ""}${r.policy_name}${r.policy_kind ? ` (${r.policy_kind})` : ""}`;
}

function pairSide(ns, name) {
  return ns && name ? `${ns}/${name}` : name || "?";
}
