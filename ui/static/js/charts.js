// Flow counts over time: the store's time series normalised, or the same
// buckets computed from ring flows when no store is there, drawn with uPlot.
// uPlot is used because it draws tens of thousands of points in a few
// milliseconds and has drag-to-select built in, which is the brush the
// history view zooms with.

export const VERDICTS = ["FORWARDED", "DROPPED", "AUDIT", "ERROR"];
const COLORS = { FORWARDED: "#3c9d5d", DROPPED: "#d93025", AUDIT: "#e0a100", ERROR: "#7f3fbf" };

/** A bucket size (seconds) that gives about 60–120 bars over the range. */
export function bucketFor(rangeSec) {
  const steps = [1, 5, 10, 30, 60, 300, 600, 1800, 3600, 10800, 21600, 86400];
  for (const s of steps) if (rangeSec / s <= 120) return s;
  return 86400;
}

function toMs(t) {
  if (typeof t === "number") return t > 1e14 ? t / 1e6 : t > 1e11 ? t : t * 1000; // ns, ms or s
  return Date.parse(t);
}

/**
 * Normalise a time-series answer into {times: [ms…], series: {VERDICT: [n…]}}.
 * Accepts rows in long form ({time|bucket, verdict, count|flows}) or wide form
 * ({time, forwarded, dropped, …}), as a list or under `buckets`/`series`/`rows`.
 */
export function normaliseSeries(body) {
  const rows = Array.isArray(body) ? body : body.records || body.buckets || body.series || body.rows || [];
  const byTime = new Map();
  for (const r of rows) {
    const t = toMs(r.time ?? r.bucket ?? r.start ?? r.ts);
    if (isNaN(t)) continue;
    const slot = byTime.get(t) || {};
    if (r.verdict !== undefined) {
      const v = String(r.verdict).toUpperCase();
      slot[v] = (slot[v] || 0) + Number(r.count ?? r.flows ?? r.n ?? 0);
    } else {
      for (const v of VERDICTS) {
        const n = r[v] ?? r[v.toLowerCase()];
        if (n !== undefined) slot[v] = (slot[v] || 0) + Number(n);
      }
      if (r.verdicts) for (const [v, n] of Object.entries(r.verdicts)) slot[v.toUpperCase()] = (slot[v.toUpperCase()] || 0) + Number(n);
      if (!Object.keys(slot).length && (r.count ?? r.flows) !== undefined) slot.FORWARDED = Number(r.count ?? r.flows);
    }
    byTime.set(t, slot);
  }
  const times = [...byTime.keys()].sort((a, b) => a - b);
  const series = {};
  for (const v of VERDICTS) series[v] = times.map((t) => byTime.get(t)[v] || 0);
  return { times, series };
}

/** The same buckets computed from flows (used when only the ring is there). */
export function bucketFlows(flows, sinceMs, untilMs, bucketSec) {
  const step = bucketSec * 1000;
  const start = Math.floor(sinceMs / step) * step;
  const n = Math.max(1, Math.ceil((untilMs - start) / step));
  const times = Array.from({ length: n }, (_, i) => start + i * step);
  const series = {};
  for (const v of VERDICTS) series[v] = new Array(n).fill(0);
  for (const f of flows) {
    const t = Date.parse(f.time);
    const i = Math.floor((t - start) / step);
    if (i < 0 || i >= n) continue;
    const v = VERDICTS.includes(f.verdict) ? f.verdict : "ERROR";
    series[v][i]++;
  }
  return { times, series };
}

/** A brushed [from, to] widened to the whole bars it touches: bar i is drawn centred on
 * times[i] but counts [times[i], times[i] + step), so the range must end a step later. */
export function snapToBuckets(times, from, to) {
  if (times.length < 2) return [from, to];
  const step = times[1] - times[0];
  const first = times[0];
  const i = Math.max(0, Math.round((from - first) / step));
  const j = Math.min(times.length - 1, Math.max(i, Math.round((to - first) / step)));
  return [first + i * step, first + (j + 1) * step];
}

/**
 * Draw stacked bars per verdict. `onSelect(fromMs, toMs)` is called when the
 * user drags across the chart (the brush). Returns the uPlot instance.
 */
export function verdictChart(el, data, { height = 180, onSelect, verdicts = VERDICTS } = {}) {
  el.replaceChildren();
  const shown = verdicts.filter((v) => data.series[v] && data.series[v].some((n) => n > 0));
  if (!shown.length) shown.push(verdicts[0]);
  // Stack: each series is drawn as the running total, so bars sit on one another.
  const stacked = [];
  let acc = data.times.map(() => 0);
  for (const v of shown) {
    acc = acc.map((a, i) => a + (data.series[v] ? data.series[v][i] : 0));
    stacked.push(acc.slice());
  }
  const bars = window.uPlot.paths.bars({ size: [0.9, 40] });
  const opts = {
    width: Math.max(300, el.clientWidth || 800),
    height,
    cursor: { drag: { x: true, y: false, setScale: false } },
    select: { show: true },
    legend: { show: true },
    scales: { x: { time: true } },
    axes: [{}, { size: 50 }],
    series: [{}, ...shown.map((v, i) => ({ label: v, stroke: COLORS[v], fill: COLORS[v] + "cc", paths: bars,
      value: (u, _val, _s, idx) => (idx === null ? "" : String(data.series[v][idx] ?? "")),
      points: { show: false }, width: 0, _z: shown.length - i }))],
    hooks: {
      setSelect: [(u) => {
        if (!onSelect || u.select.width < 3) return;
        const from = u.posToVal(u.select.left, "x") * 1000;
        const to = u.posToVal(u.select.left + u.select.width, "x") * 1000;
        u.setSelect({ left: 0, width: 0 }, false);
        onSelect(...snapToBuckets(data.times, from, to));
      }],
    },
  };
  // Draw the tallest (total) first so smaller stacks paint on top of it.
  const order = stacked.map((_, i) => i).reverse();
  opts.series = [opts.series[0], ...order.map((i) => opts.series[i + 1])];
  const plotData = [data.times.map((t) => t / 1000), ...order.map((i) => stacked[i])];
  return new window.uPlot(opts, plotData, el);
}
