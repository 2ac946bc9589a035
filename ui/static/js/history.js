// History: a time range, a histogram by verdict that zooms by brushing, a
// filtered table paged by the API's time cursor, and downloads of the query.
//
// With a store the API answers since/until from ClickHouse; an agent without
// one refuses since/until, and then the same view is served from the ring
// (what it still holds), with a note saying so.

import { apiGet, isNoStore } from "./api.js";
import { bucketFlows, bucketFor, normaliseSeries, verdictChart } from "./charts.js";
import { toQuery } from "./filters.js";
import * as fmt from "./flowfmt.js";
import { COLUMNS } from "./flows.js";
import { download, fmtNumber, getParam, h, isoTime, parseDuration, setParams } from "./util.js";
import { VTable } from "./vtable.js";

const PAGE = 200;
const EXPORT_MAX = 100000;
const RING_MAX = 65535;

function localInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 19);
}

export class HistoryView {
  constructor(root, { sidebar }) {
    this.root = root;
    this.sidebar = sidebar;
    this.range = getParam("range") || "1h";
    this.filterText = getParam("hfilter") || "";
    this.cursors = [];
    this.ringOnly = false;
    this._build();
  }

  _build() {
    this.rangeSel = h("select", { id: "history-range", onchange: () => this.setRange(this.rangeSel.value) },
      ...["15m", "1h", "24h", "custom"].map((r) => h("option", { value: r }, r === "custom" ? "Custom…" : `Last ${r}`)));
    this.fromIn = h("input", { type: "datetime-local", step: "1", id: "history-from" });
    this.toIn = h("input", { type: "datetime-local", step: "1", id: "history-to" });
    this.custom = h("span", { class: "custom", hidden: true }, this.fromIn, " → ", this.toIn,
      h("button", { onclick: () => this.setCustom(Date.parse(this.fromIn.value), Date.parse(this.toIn.value)) }, "Go"));
    this.input = h("input", { type: "text", id: "history-filter", spellcheck: "false", value: this.filterText,
      placeholder: "filter, e.g. verdict=DROPPED from:namespace=shop",
      onkeydown: (ev) => { if (ev.key === "Enter") this.applyFilter(); } });
    this.note = h("div", { class: "note", id: "history-note", hidden: true });
    this.chart = h("div", { class: "chart", id: "history-chart" });
    this.info = h("span", { class: "muted", id: "history-info" });
    this.prevBtn = h("button", { id: "history-prev", onclick: () => this.page(-1) }, "◀ Earlier");
    this.nextBtn = h("button", { id: "history-next", onclick: () => this.page(1) }, "Later ▶");
    const tableBox = h("div", { class: "table-box", id: "history-table" });
    this.root.append(
      h("div", { class: "toolbar" }, h("label", {}, "Range ", this.rangeSel), this.custom,
        h("div", { class: "filter-wrap" }, this.input, h("button", { onclick: () => this.applyFilter() }, "Apply")),
        h("button", { id: "download-csv", onclick: () => this.export("csv") }, "CSV"),
        h("button", { id: "download-json", onclick: () => this.export("json") }, "Hubble JSON")),
      this.note,
      h("div", { class: "muted small" }, "Drag across the chart to zoom into a time range."),
      this.chart,
      h("div", { class: "toolbar" }, this.prevBtn, this.nextBtn, this.info),
      tableBox);
    this.table = new VTable(tableBox, { columns: COLUMNS, rowHeight: 24, capacity: PAGE,
      fullRow: (i) => (i.lost_events ? fmt.lostLine(i.lost_events) : null),
      rowClass: (i) => (i.lost_events ? "lost" : `row-${(i.flow.verdict || "").toLowerCase()}`),
      keyOf: (i) => (i.flow ? i.flow.uuid || i.flow.time : null),
      onSelect: (i) => i.flow && this.sidebar.show(i.flow) });
    this.table.setVisibleColumns(["time", "source", "destination", "protocol", "verdict", "type", "policies"]);
    this.table.setEmptyText("No flows in this range.");
    const since = Number(getParam("since"));
    const until = Number(getParam("until"));
    if (this.range === "custom" && since && until) this._customWindow = [since, until];
    this.rangeSel.value = this.range;
  }

  /** [sinceMs, untilMs] of the current range. */
  window() {
    if (this.range === "custom" && this._customWindow) return this._customWindow;
    const secs = parseDuration(this.range) || 3600;
    const now = Date.now();
    return [now - secs * 1000, now];
  }

  show() {
    this.load();
  }

  hide() {}

  setRange(range) {
    this.range = range;
    this.custom.hidden = range !== "custom";
    if (range === "custom") {
      const [s, u] = this.window();
      this.fromIn.value = localInput(s);
      this.toIn.value = localInput(u);
      return;
    }
    setParams({ range, since: null, until: null });
    this.load();
  }

  setCustom(since, until) {
    if (!(since < until)) {
      this._note("The custom range needs a start before its end.");
      return;
    }
    this.range = "custom";
    this.rangeSel.value = "custom";
    this.custom.hidden = false;
    this._customWindow = [Math.floor(since), Math.ceil(until)];
    this.fromIn.value = localInput(since);
    this.toIn.value = localInput(until);
    setParams({ range: "custom", since: String(this._customWindow[0]), until: String(this._customWindow[1]) });
    this.load();
  }

  applyFilter() {
    this.filterText = this.input.value.trim();
    setParams({ hfilter: this.filterText || null });
    this.load();
  }

  _filters() {
    return toQuery(this.filterText);
  }

  _note(msg) {
    this.note.textContent = msg;
    this.note.hidden = !msg;
  }

  async load() {
    this.cursors = [null];
    this.pageIndex = 0;
    this._note("");
    let filters;
    try {
      filters = this._filters();
    } catch (err) {
      this._note(err.message);
      return;
    }
    const [since, until] = this.window();
    const secs = Math.max(1, (until - since) / 1000);
    const win = [["since", isoTime(since)], ["until", isoTime(until)]];
    this.ringOnly = false;
    try {
      const ts = await apiGet("/timeseries", [...win, ["bucket", `${bucketFor(secs)}s`], ...filters]);
      this._drawChart(normaliseSeries(ts));
    } catch (err) {
      if (!isNoStore(err)) {
        this._note(err.message);
        return;
      }
      this.ringOnly = true;
    }
    if (!this.ringOnly) {
      try {
        await this._fetchPage();
        return;
      } catch (err) {
        if (!isNoStore(err)) {
          this._note(err.message);
          return;
        }
        this.ringOnly = true;
      }
    }
    // Served from the ring: one request, then the chart and pages come from it.
    const body = await apiGet("/flows", [["last", String(RING_MAX)], ...filters]);
    this.ringEvents = body.flows.filter((m) => {
      const t = Date.parse(m.time || (m.flow && m.flow.time));
      return t >= since && t <= until;
    });
    this._drawChart(bucketFlows(this.ringEvents.filter((m) => m.flow).map((m) => m.flow), since, until, bucketFor(secs)));
    this._note(`No flow store here: showing the ${fmtNumber(this.ringEvents.length)} events of this range still in the ring.`);
    this._showPage(this.ringEvents.slice(0, PAGE), this.ringEvents.length > PAGE);
  }

  _drawChart(series) {
    verdictChart(this.chart, series, { height: 170, onSelect: (from, to) => this.setCustom(from, to) });
  }

  /** Fetch page `pageIndex` (oldest first from `since`) by the time cursor the API returned. */
  async _fetchPage() {
    const [since, until] = this.window();
    const params = [["since", isoTime(since)], ["until", isoTime(until)], ["first", String(PAGE)], ...this._filters()];
    const cursor = this.cursors[this.pageIndex];
    if (cursor) params.push(["after", cursor]);
    const body = await apiGet("/flows", params);
    this.cursors[this.pageIndex + 1] = body.next || null;
    this._showPage(body.flows, Boolean(body.next));
  }

  _showPage(events, more) {
    this.table.clear();
    this.table.push(events);
    this.prevBtn.disabled = this.pageIndex === 0;
    this.nextBtn.disabled = !more;
    const from = this.pageIndex * PAGE + 1;
    this.info.textContent = events.length
      ? `rows ${fmtNumber(from)}–${fmtNumber(from + events.length - 1)}${more ? "" : " (end)"}` : "no flows";
  }

  async page(delta) {
    const next = this.pageIndex + delta;
    if (next < 0) return;
    this.pageIndex = next;
    try {
      if (this.ringOnly) {
        const start = next * PAGE;
        this._showPage(this.ringEvents.slice(start, start + PAGE), start + PAGE < this.ringEvents.length);
      } else await this._fetchPage();
    } catch (err) {
      this._note(err.message);
    }
  }

  /** Every event of the current query, following the cursor (bounded). */
  async allEvents() {
    if (this.ringOnly) return this.ringEvents.slice();
    const [since, until] = this.window();
    const out = [];
    let cursor = null;
    do {
      const params = [["since", isoTime(since)], ["until", isoTime(until)], ["first", "5000"], ...this._filters()];
      if (cursor) params.push(["after", cursor]);
      const body = await apiGet("/flows", params);
      out.push(...body.flows);
      cursor = body.next || null;
    } while (cursor && out.length < EXPORT_MAX);
    return out;
  }

  async export(kind) {
    let events;
    try {
      events = await this.allEvents();
    } catch (err) {
      this._note(err.message);
      return;
    }
    const stamp = new Date().toISOString().replace(/[:.]/g, "-");
    if (kind === "csv") {
      download(`spyglass-flows-${stamp}.csv`, fmt.toCsv(events.filter((m) => m.flow).map((m) => m.flow)), "text/csv");
    } else {
      download(`spyglass-flows-${stamp}.json`, events.map((m) => JSON.stringify(m)).join("\n") + "\n", "application/x-ndjson");
    }
  }
}
