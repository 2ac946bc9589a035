// The service map's model: flows (or the store's edge records) folded into
// workload nodes and directed edges keyed like Hubble UI's links
// (source, destination, destination port, protocol). Kept apart from the
// drawing so that live flows and history records build the same thing.

import * as fmt from "./flowfmt.js";
import { fromEntries } from "./filters.js";

/** A map node for one side of a flow: workload, pod, world, host or a bare IP. */
export function nodeOf(ep, ip) {
  ep = ep || {};
  const labels = ep.labels || [];
  if (labels.includes("reserved:world") || ep.identity === 2) return { id: "world", kind: "world", label: "world" };
  if (labels.includes("reserved:host") || ep.identity === 1) return { id: "host", kind: "host", label: "host" };
  const ns = ep.namespace || "";
  const wl = (ep.workloads && ep.workloads[0] && ep.workloads[0].name) || ep.workload || "";
  if (ns && wl) return { id: `${ns}/${wl}`, kind: "workload", ns, name: wl, label: wl };
  if (ns && ep.pod_name) return { id: `${ns}/${ep.pod_name}`, kind: "pod", ns, name: ep.pod_name, label: ep.pod_name };
  if (ip) return { id: `ip:${ip}`, kind: "ip", ip, label: ip };
  return { id: "unknown", kind: "ip", label: "unknown" };
}

export class MapModel {
  constructor() {
    this.clear();
  }

  clear() {
    this.nodes = new Map();
    this.edges = new Map();
    this.namespaces = new Set();
    this.version = 0;
  }

  _node(n) {
    if (!this.nodes.has(n.id)) {
      this.nodes.set(n.id, n);
      if (n.ns) this.namespaces.add(n.ns);
    }
    return n;
  }

  _edge(src, dst, port, proto) {
    const id = `${src.id}|${dst.id}|${port}|${proto}`;
    let e = this.edges.get(id);
    if (!e) {
      // flows = events; forwarded/dropped/audit = connections by their final verdict
      // (a denied SYN is FORWARDED at the client's veth and DROPPED at the server's).
      e = { id, src: src.id, dst: dst.id, port, proto, flows: 0, connections: 0, forwarded: 0,
        dropped: 0, audit: 0, bytes: 0, policies: new Set(), first: "", last: "",
        conns: new Map() };
      this.edges.set(id, e);
    }
    return e;
  }

  /** Fold live flows in. Replies are skipped: the edge belongs to whoever opened the connection. */
  addFlows(flows) {
    for (const f of flows) {
      if (f.is_reply === true) continue;
      const src = this._node(nodeOf(f.source, (f.IP || {}).source));
      const dst = this._node(nodeOf(f.destination, (f.IP || {}).destination));
      const proto = fmt.protocol(f) || "other";
      const e = this._edge(src, dst, fmt.dstPort(f), proto);
      e.flows++;
      const ip = f.IP || {};
      const l4 = f.l4 ? Object.values(f.l4)[0] || {} : {};
      const key = `${ip.source}|${l4.source_port || 0}|${ip.destination}|${l4.destination_port || 0}`;
      const seen = e.conns.get(key);
      if (!seen || f.time >= seen.time) {
        if (seen) e[verdictKey(seen.verdict)]--;
        else e.connections++;
        e.conns.delete(key); // re-inserted last: the Map's order is "least recently seen"
        e.conns.set(key, { time: f.time, verdict: f.verdict });
        e[verdictKey(f.verdict)]++;
        // A live map stays open for days: remember the newest connections only. One that
        // is forgotten keeps its count, and would count again if it came back.
        if (e.conns.size > MAX_CONNS_PER_EDGE) e.conns.delete(e.conns.keys().next().value);
      }
      e.bytes += f.bytes || 0;
      for (const key of fmt.POLICY_KEYS) {
        if (key.includes("denied") || f.verdict === "DROPPED") {
          for (const p of f[key] || []) e.policies.add(`${p.namespace ? p.namespace + "/" : ""}${p.name}`);
        }
      }
      if (!e.first || f.time < e.first) e.first = f.time;
      if (!e.last || f.time > e.last) e.last = f.time;
    }
    this.version++;
  }

  /** Fold in the store's aggregated edge records (GET /api/v1/service-map). */
  addRecords(records) {
    for (const r of records) {
      const src = this._node(nodeOf(recordEndpoint(r, "source"), r.source_ip));
      const dst = this._node(nodeOf(recordEndpoint(r, "destination"), r.destination_ip));
      const port = Number(pick(r, ["destination_port", "dst_port", "port"]) || 0);
      const proto = protoName(pick(r, ["protocol", "proto"]));
      const e = this._edge(src, dst, port, proto);
      e.flows += Number(pick(r, ["events", "flows", "count", "flow_count"]) || 0);
      e.connections += Number(r.connections || 0);
      e.forwarded += Number(r.forwarded || 0);
      e.dropped += Number(r.dropped || 0);
      e.audit += Number(r.audit || 0);
      e.bytes += Number(r.bytes || 0);
      for (const p of r.policies || r.policy_names || []) e.policies.add(typeof p === "string" ? p : p.name);
      e.first = pick(r, ["first_seen", "first"]) || e.first;
      e.last = pick(r, ["last_seen", "last"]) || e.last;
    }
    this.version++;
  }

  /** Nodes and edges to draw for these namespaces (null = all): every edge that touches a
   * chosen namespace, with both its ends (as the store's service map answers), so world,
   * host and other namespaces show where they talk to the chosen ones. */
  view(selected) {
    const inNs = (id) => {
      const n = this.nodes.get(id);
      return Boolean(n.ns) && selected.has(n.ns);
    };
    const edges = [...this.edges.values()].filter((e) => !selected || inNs(e.src) || inNs(e.dst));
    const ids = new Set();
    for (const e of edges) {
      ids.add(e.src);
      ids.add(e.dst);
    }
    return { nodes: [...ids].map((id) => this.nodes.get(id)), edges };
  }
}

const PROTO_NAMES = { tcp: "TCP", 6: "TCP", udp: "UDP", 17: "UDP", sctp: "SCTP", 132: "SCTP",
  icmp: "ICMPv4", icmpv4: "ICMPv4", 1: "ICMPv4", icmpv6: "ICMPv6", 58: "ICMPv6" };

/** Connections an edge remembers for their final verdict (live flows only). */
const MAX_CONNS_PER_EDGE = 4096;

/** Which connection count a final verdict goes to. */
function verdictKey(verdict) {
  return verdict === "DROPPED" ? "dropped" : verdict === "AUDIT" ? "audit" : "forwarded";
}

/** The protocol as flows name it (TCP, UDP, ICMPv4 …), whether a record says "tcp" or 6. */
export function protoName(p) {
  if (p === undefined || p === null || p === "") return "other";
  return PROTO_NAMES[String(p).toLowerCase()] || String(p);
}

function pick(r, keys) {
  for (const k of keys) if (r[k] !== undefined && r[k] !== null && r[k] !== "") return r[k];
  return undefined;
}

function recordEndpoint(r, side) {
  const short = side === "source" ? "src" : "dst";
  const ns = pick(r, [`${side}_namespace`, `${short}_namespace`]) || "";
  const wl = pick(r, [`${side}_workload`, `${short}_workload`]) || "";
  const pod = pick(r, [`${side}_pod`, `${short}_pod`]) || "";
  const identity = Number(pick(r, [`${side}_identity`, `${short}_identity`]) || 0);
  const labels = pick(r, [`${side}_labels`, `${short}_labels`]) || [];
  const named = String(wl || "").replace(/^reserved:/, "");
  const reservedLabels = named === "world" || named === "host" ? [`reserved:${named}`] : [];
  return { namespace: ns, workload: reservedLabels.length ? "" : wl, pod_name: pod, identity,
    labels: [...labels, ...reservedLabels] };
}

/** Filter-bar text that selects one edge's flows (source, destination, port, protocol). */
export function edgeFilter(model, edge) {
  const entries = [];
  for (const [side, id] of [["from", edge.src], ["to", edge.dst]]) {
    const n = model.nodes.get(id);
    if (n.kind === "world" || n.kind === "host") entries.push({ side, kind: "identity", value: n.kind });
    else if (n.kind === "workload") {
      entries.push({ side, kind: "namespace", value: n.ns }, { side, kind: "workload", value: n.name });
    } else if (n.kind === "pod") entries.push({ side, kind: "pod", value: `${n.ns}/${n.name}` });
    else if (n.ip) entries.push({ side, kind: "ip", value: n.ip });
  }
  if (edge.port) entries.push({ side: "to", kind: "port", value: edge.port });
  if (edge.proto && edge.proto !== "other") entries.push({ kind: "protocol", value: edge.proto.toLowerCase() });
  return fromEntries(entries);
}
