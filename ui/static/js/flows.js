// Live flows: a filtered WebSocket stream into the virtualised table.
//
// The filter bar's text is parsed into the API's filter parameters and sent
// with the stream request, so filtering happens in the server (the same code
// as `spyglass observe`), and the text is kept in the URL to share the view.

import { FilterSyntaxError, toQuery } from "./filters.js";
import * as fmt from "./flowfmt.js";
import { LiveStream } from "./livestream.js";
import { fmtNumber, getParam, h, setParams } from "./util.js";
import { VTable } from "./vtable.js";

const CAPACITY = 10000;
const BACKLOG = 1000;
const COLUMNS_KEY = "spyglass.columns";

const flowOf = (item) => item.flow;
export const COLUMNS = [
  { key: "time", title: "Time", width: 110, get: (i) => fmt.shortTime(i.time || flowOf(i).time) },
  { key: "source", title: "Source", width: 230, get: (i) => fmt.source(flowOf(i)) },
  { key: "destination", title: "Destination", width: 250, get: (i) => fmt.destination(flowOf(i)) },
  { key: "protocol", title: "Proto", width: 64, get: (i) => fmt.protocol(flowOf(i)) },
  { key: "verdict", title: "Verdict", width: 96, get: (i) => fmt.verdict(flowOf(i)),
    cls: (i) => `v-${(flowOf(i).verdict || "").toLowerCase()}` },
  { key: "type", title: "Type", width: 170, get: (i) => fmt.eventType(flowOf(i)) },
  { key: "tcp_flags", title: "TCP flags", width: 90, get: (i) => fmt.tcpFlags(flowOf(i)) },
  { key: "identities", title: "Identities", width: 120, get: (i) => fmt.identities(flowOf(i)) },
  { key: "policies", title: "Policies", width: 200, get: (i) => fmt.policyNames(flowOf(i)) },
  { key: "drop_reason", title: "Drop reason", width: 140, get: (i) => fmt.dropReason(flowOf(i)) },
  { key: "direction", title: "Direction", width: 90,
    get: (i) => (flowOf(i).traffic_direction || "").replace("TRAFFIC_DIRECTION_", "").toLowerCase() },
  { key: "node", title: "Node", width: 110, get: (i) => i.node_name || flowOf(i).node_name || "" },
];
const DEFAULT_COLUMNS = ["time", "source", "destination", "protocol", "verdict", "type", "tcp_flags",
  "identities", "policies"];

export class FlowsView {
  constructor(root, { sidebar, onConnection }) {
    this.root = root;
    this.sidebar = sidebar;
    this.paused = false;
    this.held = [];
    this.heldDropped = 0;
    this.newest = "";
    this.skipUntil = "";
    this.filterText = getParam("filter") || "";
    this._build();
    this.stream = new LiveStream({
      path: "/flows/stream",
      params: (reconnect) => this._params(reconnect),
      onBatch: (batch) => this._onBatch(batch),
      onState: (s) => onConnection && onConnection(s),
      onError: (msg) => this._showError(msg),
    });
  }

  _build() {
    this.input = h("input", { id: "filter-input", type: "text", spellcheck: "false",
      placeholder: "from:pod=shop/frontend to:port=8080 verdict=DROPPED !to:namespace=ops",
      value: this.filterText,
      onkeydown: (ev) => { if (ev.key === "Enter") this.setFilter(this.input.value); } });
    this.error = h("div", { class: "filter-error", id: "filter-error", hidden: true });
    this.pauseBtn = h("button", { id: "pause", onclick: () => this.togglePause() }, "Pause");
    this.counter = h("span", { id: "flow-counter", class: "muted" });
    this.chooser = this._columnChooser();
    const tableBox = h("div", { class: "table-box", id: "flows-table" });
    this.root.append(
      h("div", { class: "toolbar" },
        h("div", { class: "filter-wrap" }, this.input,
          h("button", { onclick: () => this.setFilter(this.input.value) }, "Apply"),
          h("button", { title: "Clear the filter", onclick: () => this.setFilter("") }, "Clear")),
        this.pauseBtn, this.chooser, this.counter),
      this.error, tableBox);
    this.table = new VTable(tableBox, {
      columns: COLUMNS, rowHeight: 24, capacity: CAPACITY,
      fullRow: (i) => (i.lost_events ? fmt.lostLine(i.lost_events) : null),
      rowClass: (i) => (i.lost_events ? "lost" : `row-${(i.flow.verdict || "").toLowerCase()}`),
      keyOf: (i) => (i.flow ? i.flow.uuid || i.flow.time : null),
      onSelect: (i) => i.flow && this.sidebar.show(i.flow),
    });
    this.table.setEmptyText("Waiting for flows…");
    this.table.setVisibleColumns(this._savedColumns());
    this._updateCounter();
  }

  _savedColumns() {
    try {
      const saved = JSON.parse(localStorage.getItem(COLUMNS_KEY) || "null");
      if (Array.isArray(saved) && saved.length) return saved;
    } catch (_) { /* a broken setting falls back to the defaults */ }
    return DEFAULT_COLUMNS;
  }

  _columnChooser() {
    const shown = this._savedColumns();
    const boxes = COLUMNS.map((c) => h("label", {},
      h("input", { type: "checkbox", value: c.key, checked: shown.includes(c.key),
        dataset: { col: c.key },
        onchange: () => {
          const keys = [...menu.querySelectorAll("input:checked")].map((b) => b.value);
          localStorage.setItem(COLUMNS_KEY, JSON.stringify(keys));
          this.table.setVisibleColumns(keys);
        } }), c.title));
    const menu = h("div", { class: "menu", id: "column-menu", hidden: true }, boxes);
    const btn = h("button", { id: "columns", onclick: () => { menu.hidden = !menu.hidden; } }, "Columns ▾");
    return h("div", { class: "dropdown" }, btn, menu);
  }

  _params(reconnect) {
    const pairs = toQuery(this.filterText);
    // After a reconnect, ask for the backlog again (it covers the gap while we were away);
    // rows already shown are skipped by their time.
    this.skipUntil = reconnect ? this.newest : "";
    return [["last", String(BACKLOG)], ...pairs];
  }

  show() {
    if (!this.stream.running) this.start();
  }

  hide() {}

  start() {
    try {
      toQuery(this.filterText);
    } catch (err) {
      this._showError(err.message);
      return;
    }
    this._showError("");
    this.stream.start();
  }

  /** Set the filter from text (the bar, a map edge, a drops row); restarts the stream.
   * With `explain`, the newest matching flow opens in the sidebar when it arrives. */
  setFilter(text, { explain = false } = {}) {
    text = (text || "").trim();
    try {
      toQuery(text);
    } catch (err) {
      if (!(err instanceof FilterSyntaxError)) throw err;
      this._showError(err.message);
      return false;
    }
    this.filterText = text;
    this.input.value = text;
    setParams({ filter: text || null });
    this._showError("");
    this.table.clear();
    this.held = [];
    this.heldDropped = 0;
    this.newest = "";
    this.sidebar.close();
    this.explainNext = explain;
    this.stream.restart();
    this._updateCounter();
    return true;
  }

  togglePause() {
    this.paused = !this.paused;
    this.pauseBtn.textContent = this.paused ? "Resume" : "Pause";
    this.pauseBtn.classList.toggle("active", this.paused);
    if (!this.paused && this.held.length) {
      this.table.push(this.held);
      this.table.dropped += this.heldDropped;
      this.held = [];
      this.heldDropped = 0;
    }
    this._updateCounter();
  }

  _onBatch(batch) {
    const fresh = [];
    for (const msg of batch) {
      const t = msg.time || (msg.flow && msg.flow.time) || "";
      if (this.skipUntil && t <= this.skipUntil) continue;
      if (t > this.newest) this.newest = t;
      fresh.push(msg);
    }
    if (!fresh.length) return;
    if (this.paused) {
      this.held.push(...fresh);
      if (this.held.length > CAPACITY) {
        this.heldDropped += this.held.length - CAPACITY;
        this.held.splice(0, this.held.length - CAPACITY);
      }
    } else {
      this.table.push(fresh);
    }
    if (this.explainNext) this._explainNewest(fresh);
    this._updateCounter();
  }

  /** Open the newest flow of a batch in the sidebar (a drops row's "explain" link). */
  _explainNewest(events) {
    for (let i = events.length - 1; i >= 0; i--) {
      const flow = events[i].flow;
      if (!flow) continue;
      this.explainNext = false;
      this.table.selectedKey = flow.uuid || flow.time;
      this.table.schedule();
      this.sidebar.show(flow);
      return;
    }
  }

  _updateCounter() {
    const parts = [`${fmtNumber(this.table.count)} rows`];
    if (this.table.dropped) parts.push(`${fmtNumber(this.table.dropped)} older dropped from view`);
    if (this.paused) parts.push(`paused: ${fmtNumber(this.held.length)} new held`);
    this.counter.textContent = parts.join(" · ");
  }

  _showError(msg) {
    this.error.textContent = msg;
    this.error.hidden = !msg;
  }
}
