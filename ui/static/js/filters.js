// Hubble UI's filter grammar, mapped onto the API's filter query parameters.
//
// A filter bar entry reads `[!][from:|to:|either:]kind=value`, as in Hubble UI
// (`from:pod=shop/frontend`, `!to:port=53`, `verdict=DROPPED`). Entries are
// separated by spaces; a value with spaces goes in quotes (`label="tier in (a,b)"`).
// The server does the filtering: each entry becomes one query parameter with
// the CLI's flag name (`from-pod`, `to-port`, `not-verdict` …), in order, so a
// filter in the UI means exactly what the same flags mean to `spyglass observe`.

/** kind in the bar -> [base parameter name, whether it has a side]. */
export const KINDS = {
  pod: ["pod", true],
  namespace: ["namespace", true],
  label: ["label", true],
  ip: ["ip", true],
  identity: ["identity", true],
  port: ["port", true],
  workload: ["workload", true],
  service: ["service", true],
  verdict: ["verdict", false],
  "tcp-flag": ["tcp-flags", false],
  protocol: ["protocol", false],
  "drop-reason": ["drop-reason-desc", false],
  type: ["type", false],
  "traffic-direction": ["traffic-direction", false],
  reply: ["reply", false],
  node: ["node-name", false],
};

const UNSUPPORTED = {
  dns: "dns= needs L7 (DNS) visibility, which Spyglass does not have; filter by ip= or pod= instead",
  http: "http filters need L7 visibility, which Spyglass does not have",
};

export class FilterSyntaxError extends Error {}

/** Split on spaces, keeping quoted values together (quotes removed). */
export function tokenize(text) {
  const out = [];
  let cur = "";
  let quote = null;
  let started = false;
  for (const ch of text) {
    if (quote) {
      if (ch === quote) quote = null;
      else cur += ch;
    } else if (ch === '"' || ch === "'") {
      quote = ch;
      started = true;
    } else if (/\s/.test(ch)) {
      if (started || cur) out.push(cur);
      cur = "";
      started = false;
    } else {
      cur += ch;
      started = true;
    }
  }
  if (quote) throw new FilterSyntaxError(`unclosed ${quote} in the filter; close the quote`);
  if (started || cur) out.push(cur);
  return out;
}

/** Parse one entry into {negate, side, kind, value}. */
export function parseEntry(entry) {
  let rest = entry;
  let negate = false;
  if (rest.startsWith("!")) {
    negate = true;
    rest = rest.slice(1);
  }
  let side = "either";
  const m = /^(from|to|either):/.exec(rest);
  if (m) {
    side = m[1];
    rest = rest.slice(m[0].length);
  }
  const eq = rest.indexOf("=");
  if (eq <= 0) {
    throw new FilterSyntaxError(
      `${JSON.stringify(entry)} is not a filter; write kind=value, like from:pod=shop/frontend or verdict=DROPPED`);
  }
  const kind = rest.slice(0, eq).toLowerCase();
  const value = rest.slice(eq + 1);
  if (UNSUPPORTED[kind]) throw new FilterSyntaxError(UNSUPPORTED[kind]);
  const known = KINDS[kind];
  if (!known) {
    throw new FilterSyntaxError(
      `unknown filter kind ${JSON.stringify(kind)}; use one of ${Object.keys(KINDS).join(", ")}`);
  }
  if (!value) throw new FilterSyntaxError(`${kind}= needs a value, like ${kind}=${example(kind)}`);
  if (!known[1] && m && side !== "either") {
    throw new FilterSyntaxError(`${kind} has no direction; write ${negate ? "!" : ""}${kind}=${value}`);
  }
  return { negate, side, kind, value };
}

function example(kind) {
  return { pod: "shop/frontend", namespace: "shop", label: "app=web", ip: "10.0.0.0/8",
    identity: "world", port: "8080", workload: "frontend", service: "shop/cart",
    verdict: "DROPPED", "tcp-flag": "SYN", protocol: "tcp", "drop-reason": "POLICY_DENIED",
    type: "drop", "traffic-direction": "ingress", reply: "false", node: "worker-*" }[kind] || "x";
}

/** The query parameter for one parsed entry. */
export function entryParam({ negate, side, kind }) {
  const [base, sided] = KINDS[kind];
  const name = sided && side !== "either" ? `${side}-${base}` : base;
  return negate ? `not-${name}` : name;
}

/** Filter-bar text -> ordered [[param, value], …] for the API. Throws FilterSyntaxError. */
export function toQuery(text) {
  return tokenize(text || "").map(parseEntry).map((e) => [entryParam(e), e.value]);
}

/** Quote a value when it needs it, so `fromEntries` round-trips through `toQuery`. */
export function quote(value) {
  return /[\s"']/.test(value) ? `"${value.replace(/"/g, "'")}"` : value;
}

/** Build filter-bar text from entries like {side, kind, value, negate}. */
export function fromEntries(entries) {
  return entries
    .map((e) => `${e.negate ? "!" : ""}${e.side && e.side !== "either" ? e.side + ":" : ""}${e.kind}=${quote(String(e.value))}`)
    .join(" ");
}
