// Small DOM and URL helpers shared by the views.

/** Create an element: h("div", {class: "x", onclick: fn}, "text", child…). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** The page's URL state: ?view=…&filter=…; replace keeps history short while typing. */
export function getParam(name) {
  return new URLSearchParams(location.search).get(name);
}

export function setParams(values, { push = false } = {}) {
  const qs = new URLSearchParams(location.search);
  for (const [k, v] of Object.entries(values)) {
    if (v === null || v === undefined || v === "") qs.delete(k);
    else qs.set(k, v);
  }
  const url = `${location.pathname}${qs.toString() ? "?" + qs : ""}`;
  if (url === `${location.pathname}${location.search}`) return;
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
}

export function fmtNumber(n) {
  return Number(n || 0).toLocaleString("en-US");
}

export function fmtRate(n) {
  const v = Number(n || 0);
  return v >= 100 ? v.toFixed(0) : v.toFixed(1);
}

/** Save text as a file in the browser's downloads. */
export function download(name, text, type) {
  const blob = new Blob([text], { type });
  const a = h("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  setTimeout(() => {
    URL.revokeObjectURL(a.href);
    a.remove();
  }, 1000);
}

/** Copy text; falls back to a selection for pages not served over a secure context. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (_) {
    const ta = h("textarea", {}, text);
    document.body.append(ta);
    ta.select();
    const ok = document.execCommand("copy");
    ta.remove();
    return ok;
  }
}

/** RFC3339 in UTC (what the API's since/until accept). */
export function isoTime(ms) {
  return new Date(ms).toISOString();
}

const UNITS = { s: 1, m: 60, h: 3600, d: 86400 };

/** "15m", "1h30m", "24h" -> seconds; null when it is not a duration. */
export function parseDuration(text) {
  const re = /(\d+)([smhd])/g;
  let total = 0;
  let used = "";
  let m;
  while ((m = re.exec(text))) {
    total += Number(m[1]) * UNITS[m[2]];
    used += m[0];
  }
  return used && used === text ? total : null;
}
