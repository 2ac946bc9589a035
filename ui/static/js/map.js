// The service map: every namespace at once (or the ones picked), drawn with
// cytoscape.js and laid out by fcose, which handles compound nodes (a box per
// namespace) without a hand-written force layout.
//
// Live mode folds the unfiltered stream (with a ring backlog) into the model;
// a past range asks the store's aggregation (GET /api/v1/service-map).

import { apiGet, isNoStore } from "./api.js";
import { LiveStream } from "./livestream.js";
import { MapModel, edgeFilter } from "./mapmodel.js";
import { fmtNumber, getParam, h, isoTime, parseDuration, setParams } from "./util.js";

const REDRAW_MS = 1000;
const BACKLOG = 5000;

const STYLE = [
  { selector: "node", style: { label: "data(label)", "font-size": 11, color: "#1f2933", "text-valign": "center",
    "text-halign": "center", shape: "round-rectangle", width: "data(w)", height: 26, padding: "4px",
    "background-color": "#e8f0fe", "border-width": 1, "border-color": "#7a9cc6" } },
  { selector: "node.ns", style: { label: "data(label)", "text-valign": "top", "text-halign": "center",
    "font-weight": "bold", "font-size": 12, "background-color": "#f6f8fa", "background-opacity": 0.9,
    "border-color": "#b8c4d0", "border-style": "dashed", padding: "16px", shape: "round-rectangle",
    width: "auto", height: "auto" } },
  { selector: "node.world", style: { "background-color": "#efe3fb", "border-color": "#8e5bc8", shape: "ellipse" } },
  { selector: "node.host", style: { "background-color": "#fff1dc", "border-color": "#c98a2b", shape: "hexagon" } },
  { selector: "node.ip", style: { "background-color": "#f1f1f1", "border-color": "#999" } },
  { selector: "edge", style: { width: "data(width)", "curve-style": "bezier", "target-arrow-shape": "triangle",
    "line-color": "#3c9d5d", "target-arrow-color": "#3c9d5d", label: "data(label)", "font-size": 9,
    "text-background-color": "#fff", "text-background-opacity": 0.6, "text-background-padding": "1px",
    "text-rotation": "autorotate", color: "#333" } },
  { selector: "edge.audit", style: { "line-color": "#e0a100", "target-arrow-color": "#e0a100" } },
  { selector: "edge.drop", style: { "line-color": "#d93025", "target-arrow-color": "#d93025", "line-style": "solid" } },
  { selector: "edge.mixed", style: { "line-style": "dashed" } },
  { selector: "edge:selected", style: { "overlay-opacity": 0.15, "overlay-color": "#1a73e8" } },
];

export class MapView {
  constructor(root, { onEdgeClick }) {
    this.root = root;
    this.onEdgeClick = onEdgeClick;
    this.model = new MapModel();
    const ns = getParam("ns");
    this.selected = ns ? new Set(ns.split(",").filter(Boolean)) : null;
    this.range = getParam("map_range") || "live";
    this.drawnVersion = -1;
    this.layoutKey = "";
    this._build();
    this.stream = new LiveStream({
      path: "/flows/stream",
      params: () => [["last", String(BACKLOG)]],
      onBatch: (batch) => this.model.addFlows(batch.filter((m) => m.flow).map((m) => m.flow)),
    });
  }

  _build() {
    this.nsBox = h("div", { class: "ns-picker", id: "ns-picker" });
    this.rangeSel = h("select", { id: "map-range", onchange: () => this.setRange(this.rangeSel.value) },
      ...["live", "15m", "1h", "24h"].map((r) => h("option", { value: r, selected: r === this.range },
        r === "live" ? "Live" : `Last ${r}`)));
    this.info = h("span", { class: "muted", id: "map-info" });
    this.note = h("div", { class: "filter-error", hidden: true, id: "map-note" });
    this.canvas = h("div", { class: "map-canvas", id: "map-canvas" });
    this.root.append(
      h("div", { class: "toolbar" }, h("label", {}, "Range ", this.rangeSel),
        h("button", { onclick: () => this._layout(true) }, "Re-layout"), this.info),
      h("div", { class: "map-legend" },
        h("span", { class: "lg fwd" }, "forwarded"), h("span", { class: "lg audit" }, "audit"),
        h("span", { class: "lg drop" }, "any drop"), h("span", { class: "muted" }, "width: flow count · click an edge for its flows")),
      this.nsBox, this.note, this.canvas);
  }

  _ensureCy() {
    if (this.cy) return;
    if (window.cytoscapeFcose && !MapView.registered) {
      window.cytoscape.use(window.cytoscapeFcose);
      MapView.registered = true;
    }
    this.cy = window.cytoscape({ container: this.canvas, style: STYLE,
      minZoom: 0.2, maxZoom: 3, boxSelectionEnabled: false });
    this.cy.on("tap", "edge", (ev) => {
      const e = this.model.edges.get(ev.target.id());
      if (e) this.onEdgeClick(edgeFilter(this.model, e));
    });
  }

  show() {
    this.visible = true;
    this._ensureCy();
    this.cy.resize();
    this._load();
    this.timer = setInterval(() => this.redraw(), REDRAW_MS);
  }

  hide() {
    this.visible = false;
    clearInterval(this.timer);
    this.stream.stop();
  }

  setRange(range) {
    this.range = range;
    setParams({ map_range: range === "live" ? null : range });
    this.stream.stop();
    this._load();
  }

  async _load() {
    this.model.clear();
    this.drawnVersion = -1;
    this.laidOut = false;
    this.note.hidden = true;
    this._namespacesFromApi();
    if (this.range === "live") {
      this.stream.start();
      return;
    }
    const secs = parseDuration(this.range);
    const params = [["since", isoTime(Date.now() - secs * 1000)], ["until", isoTime(Date.now())]];
    for (const ns of this.selected || []) params.push(["namespace", ns]);
    try {
      const body = await apiGet("/service-map", params);
      this.model.addRecords(Array.isArray(body) ? body : body.records || body.edges || []);
    } catch (err) {
      this._note(isNoStore(err)
        ? `Past ranges need the flow store, and this agent has none: ${err.message}`
        : err.message);
    }
    this.redraw();
  }

  async _namespacesFromApi() {
    try {
      const body = await apiGet("/namespaces");
      const list = Array.isArray(body) ? body : body.namespaces || [];
      for (const n of list) this.model.namespaces.add(typeof n === "string" ? n : n.namespace || n.name);
      this._pickers();
    } catch (_) {
      /* older agents have no /namespaces: the picker fills from the flows instead */
    }
  }

  _note(msg) {
    this.note.textContent = msg;
    this.note.hidden = !msg;
  }

  _pickers() {
    const all = [...this.model.namespaces].sort();
    const key = all.join(",") + "|" + [...(this.selected || [])].join(",");
    if (key === this.pickerKey) return;
    this.pickerKey = key;
    const boxes = all.map((ns) => h("label", {}, h("input", { type: "checkbox", value: ns,
      checked: !this.selected || this.selected.has(ns), onchange: () => this._pick() }), ns));
    this.nsBox.replaceChildren(h("span", { class: "muted" }, "Namespaces: "),
      h("button", { class: "link", onclick: () => this._pick(null) }, "all"), ...boxes);
  }

  _pick(all) {
    if (all === null) this.selected = null;
    else {
      const on = [...this.nsBox.querySelectorAll("input:checked")].map((b) => b.value);
      this.selected = on.length === this.model.namespaces.size ? null : new Set(on);
    }
    setParams({ ns: this.selected ? [...this.selected].join(",") : null });
    this.pickerKey = "";
    this.drawnVersion = -1;
    this.redraw();
    if (this.range !== "live") this._load();
  }

  /** Push the model into cytoscape: add what is new, update counts and colours. */
  redraw() {
    if (!this.visible || !this.cy || this.model.version === this.drawnVersion) return;
    this.drawnVersion = this.model.version;
    this._pickers();
    const { nodes, edges } = this.model.view(this.selected);
    const want = new Set();
    const cy = this.cy;
    cy.batch(() => {
      for (const n of nodes) {
        if (n.ns) {
          const pid = `ns:${n.ns}`;
          want.add(pid);
          if (cy.getElementById(pid).empty()) cy.add({ data: { id: pid, label: n.ns, w: 0 }, classes: "ns" });
        }
        want.add(n.id);
        if (cy.getElementById(n.id).empty()) {
          const data = { id: n.id, label: n.label, w: 16 + 7 * n.label.length };
          if (n.ns) data.parent = `ns:${n.ns}`; // an undefined parent would hide the node
          cy.add({ data, classes: n.kind });
        }
      }
      for (const e of edges) {
        want.add(e.id);
        const cls = [e.dropped ? "drop" : e.audit ? "audit" : "fwd", e.dropped && e.forwarded ? "mixed" : ""].join(" ");
        const data = { id: e.id, source: e.src, target: e.dst, width: Math.min(10, 1.5 + 2 * Math.log10(1 + e.flows)),
          label: `${e.proto}${e.port ? "/" + e.port : ""} · ${fmtNumber(e.connections)} conn${e.dropped ? ` (${fmtNumber(e.dropped)} dropped)` : ""} · ${fmtNumber(e.flows)} events`,
          flows: e.flows, dropped: e.dropped, forwarded: e.forwarded, audit: e.audit };
        const el = cy.getElementById(e.id);
        if (el.empty()) cy.add({ data, classes: cls });
        else {
          el.data(data);
          el.classes(cls);
        }
      }
      cy.elements().filter((el) => !want.has(el.id())).remove();
    });
    const drops = edges.filter((e) => e.dropped).length;
    this.info.textContent = `${nodes.length} workloads · ${edges.length} edges · ${drops} with drops`;
    const key = cy.nodes().map((n) => n.id()).sort().join(",");
    if (key !== this.layoutKey) {
      this.layoutKey = key;
      this._layout(!this.laidOut);
      this.laidOut = true;
    }
  }

  _layout(randomize) {
    if (!this.cy || this.cy.nodes().empty()) return;
    const name = window.cytoscapeFcose ? "fcose" : "cose";
    this.cy.layout({ name, animate: false, randomize,
      nodeRepulsion: 12000, idealEdgeLength: 170, nestingFactor: 0.5, padding: 30, fit: true }).run();
  }
}
