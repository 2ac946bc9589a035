// The detail sidebar: the whole flow as fields, and "why was this dropped?".
//
// The explain panel asks GET /api/v1/explain about the flow (by its uuid and by
// from/to/port/protocol, so the server can use whichever it knows), and shows
// the verdict, the reasons, and the YAML that would allow the traffic, with a
// copy button: the shortest path from "this is red" to "this is fixed".

import { apiGet } from "./api.js";
import * as fmt from "./flowfmt.js";
import { copyText, h } from "./util.js";

/** replaceChildren without the nulls of optional parts (it would print them as "null"). */
function fill(el, ...kids) {
  el.replaceChildren(...kids.filter((k) => k !== null && k !== undefined && k !== false));
}

export class Sidebar {
  constructor(root) {
    this.root = root;
    this.flow = null;
    this.abort = null;
  }

  close() {
    this.root.hidden = true;
    this.flow = null;
    if (this.abort) this.abort.abort();
  }

  show(flow) {
    this.flow = flow;
    this.root.hidden = false;
    const dropped = flow.verdict === "DROPPED";
    const policies = fmt.policyNames(flow);
    const summary = h("div", { class: "sb-summary" },
      h("div", { class: `verdict v-${(flow.verdict || "").toLowerCase()}` }, fmt.verdict(flow)),
      h("div", {}, `${fmt.source(flow)} → ${fmt.destination(flow)}`),
      h("div", { class: "muted" }, `${fmt.protocol(flow)} ${fmt.eventType(flow)} ${fmt.dropReason(flow)}`),
      policies ? h("div", { class: "sb-policy" }, "policy: ", h("b", {}, policies)) : null);
    const rows = fmt.flatten(flow).map(([k, v]) =>
      h("tr", {}, h("th", {}, k), h("td", {}, v === undefined || v === null ? "" : String(v))));
    const explain = h("section", { class: "explain", id: "explain" });
    fill(this.root,
      h("header", { class: "sb-head" },
        h("h2", {}, "Flow"),
        h("button", { class: "icon", title: "Close (Esc)", onclick: () => this.close() }, "×")),
      summary,
      explain,
      h("h3", {}, "All fields"),
      h("table", { class: "fields" }, h("tbody", {}, rows)));
    if (dropped) this.explain(flow, explain);
    else {
      explain.append(h("button", { class: "link", onclick: () => this.explain(flow, explain) },
        "Explain the policy verdict for this flow"));
    }
  }

  async explain(flow, box) {
    if (this.abort) this.abort.abort();
    this.abort = new AbortController();
    fill(box, h("h3", {}, flow.verdict === "DROPPED" ? "Why was this dropped?" : "Policy verdict"),
      h("div", { class: "muted" }, "asking /api/v1/explain …"));
    let answer;
    const signal = this.abort.signal;
    try {
      try {
        answer = await apiGet("/explain", fmt.explainParams(flow), { signal });
      } catch (err) {
        // An end that is not a pod (world, host) may only be explainable by the flow itself.
        if (err.status !== 400 || !flow.uuid) throw err;
        answer = await apiGet("/explain", { flow: flow.uuid }, { signal });
      }
    } catch (err) {
      if (err.name === "AbortError") return;
      const why = err.status === 404 && /not found/i.test(err.message) && /explain/.test(err.message)
        ? "This Spyglass has no policy explain endpoint yet (GET /api/v1/explain)."
        : err.message;
      fill(box, h("h3", {}, "Why was this dropped?"), h("div", { class: "error" }, why));
      return;
    }
    renderExplain(box, answer, flow);
  }
}

/** The YAML that would allow the flow, wherever the answer puts it. */
export function allowYaml(answer) {
  if (!answer || typeof answer !== "object") return "";
  for (const key of ["allow_yaml", "yaml", "suggested_policy", "suggestion", "policy_yaml", "fix"]) {
    const v = answer[key];
    if (typeof v === "string" && v.trim()) return v;
    if (v && typeof v === "object") {
      const inner = allowYaml(v);
      if (inner) return inner;
    }
  }
  return "";
}

function refName(p) {
  if (typeof p === "string") return p;
  return `${p.kind ? p.kind + " " : ""}${p.namespace ? p.namespace + "/" : ""}${p.name}${p.rule ? `, ${p.rule}` : ""}`;
}

function endpointText(ep) {
  if (!ep) return "";
  return ep.pod_name ? `${ep.namespace}/${ep.pod_name}` : ep.ip || "";
}

/** One line per direction: where it was checked, the verdict, and why in plain words. */
function directionRows(answer) {
  const rows = [];
  for (const key of ["egress", "ingress"]) {
    const d = answer[key];
    if (!d || typeof d !== "object") continue;
    const where = `${key} at ${endpointText(d.endpoint) || "?"}`;
    const by = [...(d.denied_by || []), ...(d.allowed_by || [])].map(refName);
    rows.push(h("tr", { class: `dir-${key}` },
      h("th", {}, where),
      h("td", {},
        h("span", { class: `verdict v-${String(d.verdict || "").toLowerCase()}` }, d.verdict || ""),
        d.match_type && d.match_type !== "none" ? ` (${d.match_type})` : "",
        h("div", {}, d.statement || ""),
        by.length ? h("div", { class: "muted" }, `rule: ${by.join("; ")}`) : null)));
  }
  return rows;
}

export function renderExplain(box, answer, flow) {
  const yaml = allowYaml(answer);
  const sug = answer.suggestion || {};
  const command = sug.command || answer.command || "";
  const verdict = answer.verdict || "";
  const copyBtn = h("button", { class: "copy", id: "copy-yaml", onclick: async () => {
    const ok = await copyText(yaml);
    copyBtn.textContent = ok ? "Copied" : "Copy failed";
    setTimeout(() => (copyBtn.textContent = "Copy YAML"), 1500);
  } }, "Copy YAML");
  const dirs = directionRows(answer);
  const reason = answer.drop_reason_desc ? ` (${answer.drop_reason_desc})` : "";
  fill(box,
    h("h3", {}, flow.verdict === "DROPPED" ? "Why was this dropped?" : "Policy verdict"),
    verdict ? h("div", {}, "Current policy: ",
      h("span", { class: `verdict v-${String(verdict).toLowerCase()}` }, verdict), reason) : null,
    dirs.length ? h("table", { class: "fields explain-dirs" }, h("tbody", {}, dirs)) : null,
    yaml ? h("div", { class: "yaml-head" }, h("span", {}, sug.name ? `To allow it (${sug.format || "policy"} ${sug.name}):` : "A policy that would allow it:"), copyBtn) : null,
    yaml ? h("pre", { class: "yaml", id: "explain-yaml" }, yaml)
      : h("div", { class: "muted" }, verdict === "DROPPED" ? "No allowing policy suggested." : "Nothing to fix: the current policy allows it."),
    sug.note ? h("p", { class: "muted" }, sug.note) : null,
    command ? h("div", { class: "cmd" }, "Apply with ", h("code", {}, command)) : null);
}
