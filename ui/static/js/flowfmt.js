// How a flow reads in the UI: the same words the CLI's printer (cli/printer.py) uses, so
// that what people see in the browser matches `spyglass observe`, and both say what
// `hubble observe` says. tests/fixtures/flow_text.json pins the texts for both sides.
//
// The tables below copy the model's (spyglass.model.enums, cli/printer.py): the browser
// has no other way to know them. tests/ui/test_flowfmt_golden.py checks every entry
// against the Python side, so a new drop reason or identity cannot drift apart.

const EVENT_DROP = 1;
const EVENT_TRACE = 4;
const EVENT_POLICY_VERDICT = 5;
const MATCH_TEXT = { 0: "none", 1: "L3-Only", 2: "L3-L4", 3: "L4-Only", 4: "all" };
export const POLICY_KEYS = ["ingress_allowed_by", "egress_allowed_by", "ingress_denied_by", "egress_denied_by"];

/** Cilium's reserved identities, written `(world)` instead of `(ID:2)`. */
export const RESERVED_IDENTITY_NAMES = {
  1: "host", 2: "world", 3: "unmanaged", 4: "health", 5: "init", 6: "remote-node",
  7: "kube-apiserver", 8: "ingress", 9: "world-ipv4", 10: "world-ipv6",
};

/** Drop reasons as `pkg/monitor/api/drop.go` words them; others read as the name's words. */
export const DROP_REASON_TEXT = {
  POLICY_DENIED: "Policy denied",
  POLICY_DENY: "Policy denied by denylist",
  INVALID_SOURCE_IP: "Invalid source ip",
  STALE_OR_UNROUTABLE_IP: "Stale or unroutable IP",
  SERVICE_BACKEND_NOT_FOUND: "Service backend not found",
  UNKNOWN_L4_PROTOCOL: "Unknown L4 protocol",
  UNSUPPORTED_L3_PROTOCOL: "Unsupported L3 protocol",
  CT_MAP_INSERTION_FAILED: "CT: Map insertion failed",
  FIB_LOOKUP_FAILED: "FIB lookup failed",
  TTL_EXCEEDED: "TTL exceeded",
};

/** The monitor's trace subtypes, for a trace event whose JSON names no observation point. */
export const TRACE_SUBTYPE_POINT = [
  "TO_ENDPOINT", "TO_PROXY", "TO_HOST", "TO_STACK", "TO_OVERLAY", "FROM_ENDPOINT", "FROM_PROXY",
  "FROM_HOST", "FROM_STACK", "FROM_OVERLAY", "FROM_NETWORK", "TO_NETWORK", "FROM_CRYPTO", "TO_CRYPTO",
];

/** TCP flags in the order the CLI's summary prints them (the JSON's key order is not a contract). */
export const TCP_FLAG_ORDER = ["SYN", "ACK", "RST", "FIN", "PSH", "URG", "ECE", "CWR"];

const PORTED = ["TCP", "UDP", "SCTP"];

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

/** "SYN, ACK": the flags as the CLI's summary lists them after "TCP Flags: ". */
export function tcpFlags(flow) {
  const [name, body] = l4(flow);
  if (name !== "TCP" || !body.flags) return "";
  return TCP_FLAG_ORDER.filter((k) => body.flags[k]).join(", ");
}

/** "ns/pod" for a pod, else "ns/service" for a service address, else the IP (Hubble's order). */
export function endpointName(ep, ip, service) {
  ep = ep || {};
  const inNs = (ns, name) => (ns ? `${ns}/${name}` : name);
  if (ep.pod_name) return inNs(ep.namespace, ep.pod_name);
  if (service && service.name) return inNs(service.namespace, service.name);
  return ip || "";
}

/** One end as the CLI writes it: the name, and ":port" for TCP/UDP/SCTP ("[v6]:port"). */
function side(flow, ep, ip, service, port) {
  const host = endpointName(ep, ip, service);
  if (!port || !PORTED.includes(protocol(flow))) return host;
  return `${host.includes(":") ? `[${host}]` : host}:${port}`;
}

export function source(flow) {
  return side(flow, flow.source, (flow.IP || {}).source, flow.source_service, srcPort(flow));
}

export function destination(flow) {
  return side(flow, flow.destination, (flow.IP || {}).destination, flow.destination_service,
    dstPort(flow));
}

/** "(world)" for a reserved identity, "(ID:1234)" otherwise, as the compact line has it. */
export function identity(ep) {
  const id = (ep || {}).identity ?? 0;
  const name = RESERVED_IDENTITY_NAMES[id];
  return name ? `(${name})` : `(ID:${id})`;
}

export function identities(flow) {
  return `${identity(flow.source)} → ${identity(flow.destination)}`;
}

/** A drop's reason in words: "Policy denied", what the CLI's TYPE column says for a drop. */
export function dropReasonText(flow) {
  const desc = flow.drop_reason_desc;
  if (!desc) return "Unknown drop reason";
  return DROP_REASON_TEXT[desc] || desc.replace(/_/g, " ");
}

/** Hubble's TYPE column: to-endpoint, Policy denied, policy-verdict:L3-L4 INGRESS. */
export function eventType(flow) {
  const et = flow.event_type || {};
  if (et.type === EVENT_DROP) return dropReasonText(flow);
  if (et.type === EVENT_POLICY_VERDICT) {
    const dir = flow.traffic_direction || "TRAFFIC_DIRECTION_UNKNOWN";
    return `policy-verdict:${MATCH_TEXT[flow.policy_match_type || 0] || "none"} ${dir}`;
  }
  if (et.type === EVENT_TRACE) {
    const sub = et.sub_type || 0;
    const point = flow.trace_observation_point || TRACE_SUBTYPE_POINT[sub];
    return point ? point.toLowerCase().replace(/_/g, "-") : String(sub);
  }
  return "UNKNOWN";
}

/** The verdict word; policy-verdict events say ALLOWED / DENIED / AUDITED, as in Hubble. */
export function verdict(flow) {
  const v = flow.verdict || "VERDICT_UNKNOWN";
  if ((flow.event_type || {}).type === EVENT_POLICY_VERDICT) {
    return { FORWARDED: "ALLOWED", REDIRECTED: "ALLOWED", DROPPED: "DENIED", ERROR: "DENIED",
      AUDIT: "AUDITED" }[v] || v;
  }
  return v;
}

/** The policies behind the verdict, "ns/name (Kind)": those that denied a dropped or audited
 * flow, else those that allowed it, on the flow's side (both sides when it is not known). */
export function policyNames(flow) {
  const denied = flow.verdict === "DROPPED" || flow.verdict === "AUDIT";
  const kind = denied ? "denied_by" : "allowed_by";
  const dir = flow.traffic_direction;
  const sides = dir === "EGRESS" ? ["egress"] : dir === "INGRESS" ? ["ingress"] : ["ingress", "egress"];
  const out = [];
  for (const s of sides) {
    for (const p of flow[`${s}_${kind}`] || []) {
      const name = p.namespace ? `${p.namespace}/${p.name}` : p.name;
      out.push(p.kind ? `${name} (${p.kind})` : name);
    }
  }
  return out.join(", ");
}

/** The reason's name (POLICY_DENIED): what the drop-reason filter and the store key on. */
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
  // Int32Value's JSON is the bare number; older agents wrote {"value": n}.
  const cpu = lost.cpu && typeof lost.cpu === "object" ? lost.cpu.value : lost.cpu;
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
