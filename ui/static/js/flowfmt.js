// How a flow reads in the UI: the same words the CLI's compact printer uses,
// so that what people see in the browser matches `spyglass observe`.

const EVENT_DROP = 1;
const EVENT_TRACE = 4;
const EVENT_POLICY_VERDICT = 5;
const MATCH_TEXT = { 0: "none", 1: "L3-Only", 2: "L3-L4", 3: "L4-Only", 4: "all" };
export const POLICY_KEYS = ["ingress_allowed_by", "egress_allowed_by", "ingress_denied_by", "egress_denied_by"];

/** The L4 oneof: [protocol name, body] or ["", {}]. */
export function l4(flow) {
  const entries = Object.entries(flow.l4 || {});
  return entries.length ? entries[0] : ["", {}];
}

export function protocol(flow) {
  return l4(flow)[0] || "";
}

export function dstPort(flow) {
  return l4(flow)[1].destination_port || 0;
}

export function srcPort(flow) {
  return l4(flow)[1].source_port || 0;
}

export function tcpFlags(flow) {
  const [name, body] = l4(flow);
  if (name !== "TCP" || !body.flags) return "";
  return Object.keys(body.flags).filter((k) => body.flags[k]).join(",");
}

function reserved(ep) {
  const labels = ep.labels || [];
  if (labels.includes("reserved:world") || ep.identity === 2) return "world";
  if (labels.includes("reserved:host") || ep.identity === 1) return "host";
  return "";
}

/** "ns/pod" for pods, "world"/"host" for the reserved endpoints, else the IP. */
export function endpointName(ep, ip) {
  ep = ep || {};
  if (ep.pod_name) return `${ep.namespace ? ep.namespace + "/" : ""}${ep.pod_name}`;
  const r = reserved(ep);
  if (r && ip) return `${ip} (${r})`;
  return ip || r || "?";
}

export function source(flow) {
  const ip = (flow.IP || {}).source || "";
  const port = srcPort(flow);
  return endpointName(flow.source, ip) + (port ? `:${port}` : "");
}

export function destination(flow) {
  const ip = (flow.IP || {}).destination || "";
  const port = dstPort(flow);
  return endpointName(flow.destination, ip) + (port ? `:${port}` : "");
}

export function identities(flow) {
  const s = (flow.source || {}).identity ?? 0;
  const d = (flow.destination || {}).identity ?? 0;
  return `${s} → ${d}`;
}

/** Hubble's type column: to-endpoint, drop, policy-verdict:L3-L4 INGRESS. */
export function eventType(flow) {
  const t = (flow.event_type || {}).type;
  if (t === EVENT_DROP) return "drop";
  if (t === EVENT_POLICY_VERDICT) {
    const dir = (flow.traffic_direction || "").replace("TRAFFIC_DIRECTION_", "");
    return `policy-verdict:${MATCH_TEXT[flow.policy_match_type || 0]} ${dir}`.trim();
  }
  if (t === EVENT_TRACE) {
    const point = flow.trace_observation_point;
    return point ? point.toLowerCase().replace(/_/g, "-") : "trace";
  }
  return t === undefined ? "" : String(t);
}

export function verdict(flow) {
  const v = flow.verdict || "";
  if ((flow.event_type || {}).type === EVENT_POLICY_VERDICT) {
    return { FORWARDED: "ALLOWED", DROPPED: "DENIED", AUDIT: "AUDITED" }[v] || v;
  }
  return v;
}

/** Policy names that allowed or denied the flow, "ns/name (Kind)". */
export function policyNames(flow) {
  const out = [];
  for (const key of POLICY_KEYS) {
    for (const p of flow[key] || []) {
      const name = `${p.namespace ? p.namespace + "/" : ""}${p.name}`;
      if (!out.includes(name)) out.push(name);
    }
  }
  return out.join(", ");
}

export function dropReason(flow) {
  return flow.drop_reason_desc || "";
}

/** HH:MM:SS.mmm in local time, the part that matters when watching live. */
export function shortTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** The line the CLI prints for a lost-events record. */
export function lostLine(lost) {
  const cpu = lost.cpu && typeof lost.cpu === "object" ? lost.cpu.value : 0;
  return `EVENTS LOST: ${lost.source} CPU(${cpu || 0}) ${lost.num_events_lost}`;
}

/** Flatten the flow JSON into [path, value] pairs for the detail sidebar. */
export function flatten(obj, prefix = "", out = []) {
  if (obj === null || typeof obj !== "object") {
    out.push([prefix, obj]);
    return out;
  }
  if (Array.isArray(obj)) {
    if (obj.length === 0) out.push([prefix, "[]"]);
    else if (obj.every((v) => v === null || typeof v !== "object")) out.push([prefix, obj.join(", ")]);
    else obj.forEach((v, i) => flatten(v, `${prefix}[${i}]`, out));
    return out;
  }
  for (const [k, v] of Object.entries(obj)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  return out;
}

/** Parameters for GET /api/v1/explain that describe this flow by its ends, port and
 * protocol (the current policy's answer for that traffic, even once the flow is gone). */
export function explainParams(flow) {
  const p = new URLSearchParams();
  const src = flow.source || {};
  const dst = flow.destination || {};
  const ip = flow.IP || {};
  p.set("from", src.pod_name ? `${src.namespace}/${src.pod_name}` : ip.source || "");
  p.set("to", dst.pod_name ? `${dst.namespace}/${dst.pod_name}` : ip.destination || "");
  const port = dstPort(flow);
  if (port) p.set("port", String(port));
  const proto = protocol(flow);
  if (proto) p.set("protocol", proto.toLowerCase().replace("icmpv4", "icmp"));
  return p;
}

/** A flow in the CSV export: the columns people sort by in a spreadsheet. */
export const CSV_COLUMNS = [
  ["time", (f) => f.time],
  ["verdict", (f) => f.verdict],
  ["drop_reason", dropReason],
  ["type", eventType],
  ["source_namespace", (f) => (f.source || {}).namespace || ""],
  ["source_pod", (f) => (f.source || {}).pod_name || ""],
  ["source_ip", (f) => (f.IP || {}).source || ""],
  ["source_port", srcPort],
  ["source_identity", (f) => (f.source || {}).identity ?? ""],
  ["destination_namespace", (f) => (f.destination || {}).namespace || ""],
  ["destination_pod", (f) => (f.destination || {}).pod_name || ""],
  ["destination_ip", (f) => (f.IP || {}).destination || ""],
  ["destination_port", dstPort],
  ["destination_identity", (f) => (f.destination || {}).identity ?? ""],
  ["protocol", protocol],
  ["tcp_flags", tcpFlags],
  ["traffic_direction", (f) => f.traffic_direction || ""],
  ["is_reply", (f) => (f.is_reply === undefined ? "" : String(f.is_reply))],
  ["policies", policyNames],
  ["node_name", (f) => f.node_name || ""],
  ["uuid", (f) => f.uuid || ""],
];

function csvCell(v) {
  const s = v === null || v === undefined ? "" : String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function toCsv(flows) {
  const lines = [CSV_COLUMNS.map((c) => c[0]).join(",")];
  for (const f of flows) lines.push(CSV_COLUMNS.map(([, get]) => csvCell(get(f))).join(","));
  return lines.join("\n") + "\n";
}
