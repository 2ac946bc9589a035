// The status bar: what the agent says about itself, and whether we are connected.
//
// Status is polled (it is cheap and one request answers everything); the
// connection state comes from the live stream, which knows first when the
// server goes away and counts down to its next try.

import { apiGet } from "./api.js";
import { fmtNumber, fmtRate, h } from "./util.js";

const POLL_MS = 2000;

/** Writer lag in seconds from whatever shape the store writer reports, or null. */
export function writerLag(writer) {
  if (!writer || typeof writer !== "object") return null;
  for (const key of ["lag_s", "lag_seconds", "lag"]) {
    if (typeof writer[key] === "number") return writer[key];
  }
  if (typeof writer.lag_ms === "number") return writer.lag_ms / 1000;
  if (typeof writer.lag_ns === "number") return writer.lag_ns / 1e9;
  return null;
}

export class StatusBar {
  constructor(root) {
    this.root = root;
    this.conn = h("span", { id: "conn", class: "conn connecting" }, "connecting…");
    this.node = h("span", { id: "st-node" });
    this.rate = h("span", { id: "st-rate" });
    this.ring = h("span", { id: "st-ring" });
    this.writer = h("span", { id: "st-writer" });
    this.lost = h("span", { id: "st-lost" });
    this.root.append(this.conn, this.node, this.rate, this.ring, this.writer, this.lost);
    this.timer = 0;
    this.last = null;
  }

  start() {
    const tick = async () => {
      try {
        this.update(await apiGet("/status"));
      } catch (err) {
        this.rate.textContent = "";
        this.node.textContent = `status: ${err.message}`;
      }
      this.timer = setTimeout(tick, POLL_MS);
    };
    tick();
  }

  update(st) {
    this.last = st;
    this.node.textContent = `node ${st.node_name}`;
    this.rate.textContent = `${fmtRate(st.flows_rate)} flows/s`;
    const pct = st.max_flows ? Math.round((100 * st.num_flows) / st.max_flows) : 0;
    this.ring.textContent = `ring ${fmtNumber(st.num_flows)}/${fmtNumber(st.max_flows)} (${pct}%)`;
    // The store and its writer: `store` in status (older agents: `writer`).
    const store = st.store && st.store.kind ? st.store : st.writer || null;
    const lag = writerLag(store);
    if (!store) this.writer.textContent = "no store (history off)";
    else {
      const parts = [`store ${store.kind || ""}`.trim(), `writer lag ${lag === null ? "?" : lag.toFixed(1) + "s"}`];
      if (store.queued_rows) parts.push(`${fmtNumber(store.queued_rows)} queued`);
      if (store.up === false) parts.push(`DOWN: ${store.last_error || "not answering"}`);
      this.writer.textContent = parts.join(" · ");
    }
    this.writer.classList.toggle("warn", Boolean(store && store.up === false));
    const lost = Object.entries(st.lost_events || {}).filter(([, n]) => n > 0);
    this.lost.textContent = lost.length
      ? `lost: ${lost.map(([s, n]) => `${s} ${fmtNumber(n)}`).join(", ")}` : "lost: none";
    this.lost.classList.toggle("warn", lost.length > 0);
  }

  /** Show the live stream's state: live, connecting, or retrying in N s. */
  connection(s) {
    const text = {
      live: "● live",
      connecting: "connecting…",
      stopped: "stopped",
      retrying: `disconnected, retrying in ${s.retryIn}s`,
      error: `stream refused: ${s.message || ""}`,
    }[s.state] || s.state;
    this.conn.textContent = text;
    this.conn.className = `conn ${s.state}`;
  }
}
