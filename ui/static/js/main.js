// The dashboard's entry point: views, tabs, the URL, and start-up order.
//
// Start-up asks for /status first, so that an API with a token prompts once
// before any stream opens; the live-flows stream then runs whatever view is
// shown, so switching back to it never loses what arrived meanwhile.

import { apiGet } from "./api.js";
import { DropsView } from "./drops.js";
import { FlowsView } from "./flows.js";
import { HistoryView } from "./history.js";
import { MapView } from "./map.js";
import { Sidebar } from "./sidebar.js";
import { StatusBar } from "./statusbar.js";
import { getParam, setParams } from "./util.js";

const VIEWS = ["flows", "map", "drops", "history"];

function main() {
  const status = new StatusBar(document.getElementById("statusbar"));
  const sidebar = new Sidebar(document.getElementById("sidebar"));
  const views = {};
  const show = (name, { push = true } = {}) => {
    if (!VIEWS.includes(name)) name = "flows";
    for (const v of VIEWS) {
      const active = v === name;
      document.getElementById(`view-${v}`).hidden = !active;
      document.querySelector(`nav [data-view="${v}"]`).classList.toggle("active", active);
      if (!active && views[v].visible !== false) views[v].hide();
    }
    if (name !== "flows" && name !== "history") sidebar.close();
    setParams({ view: name === "flows" ? null : name }, { push });
    current = name;
    views[name].show();
  };
  let current = null;
  const openFlows = (filter, explain) => {
    show("flows");
    views.flows.setFilter(filter, { explain });
  };
  views.flows = new FlowsView(document.getElementById("view-flows"), {
    sidebar, onConnection: (s) => status.connection(s) });
  views.map = new MapView(document.getElementById("view-map"), { onEdgeClick: (f) => openFlows(f, false) });
  views.drops = new DropsView(document.getElementById("view-drops"), { openFlows });
  views.history = new HistoryView(document.getElementById("view-history"), { sidebar });
  for (const a of document.querySelectorAll("nav [data-view]")) {
    a.addEventListener("click", (ev) => {
      ev.preventDefault();
      show(a.dataset.view);
    });
  }
  window.addEventListener("popstate", () => show(getParam("view") || "flows", { push: false }));
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") sidebar.close();
  });
  window.spyglass = { views, status, sidebar, show, current: () => current };

  // Ask once for the token (if the API wants one) before any stream starts.
  apiGet("/status")
    .catch(() => null)
    .then(() => {
      status.start();
      views.flows.start();
      show(getParam("view") || "flows", { push: false });
    });
}

main();
