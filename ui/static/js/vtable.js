// A virtualised table: fixed row height, only the rows in view exist in the DOM.
//
// Why hand-written: at 2,000 flows/s a table that adds a DOM row per flow falls
// behind within seconds (Hubble UI's "hangs at high flow rates"). Here incoming
// rows go into a fixed-size ring (the newest `capacity` are kept, older ones
// are counted as dropped from view), and at most one repaint per animation
// frame reuses a small pool of row elements for the rows that are visible.
// Newest rows are on top; when the user has scrolled down to read, the view is
// kept on the same rows as new ones arrive above.

export class VTable {
  /**
   * @param {HTMLElement} root  an empty element; the table fills it
   * @param {object} opts  {columns: [{key, title, width (px), get(item), cls?(item)}],
   *   rowHeight, capacity, fullRow?(item) -> text|null, rowClass?(item), onSelect?(item)}
   */
  constructor(root, opts) {
    this.root = root;
    this.columns = opts.columns;
    this.rowHeight = opts.rowHeight || 24;
    this.capacity = opts.capacity || 10000;
    this.fullRow = opts.fullRow || (() => null);
    this.rowClass = opts.rowClass || (() => "");
    this.onSelect = opts.onSelect || (() => {});
    this.keyOf = opts.keyOf || (() => null);
    this.buf = new Array(this.capacity);
    this.next = 0; // where the next item is written
    this.count = 0;
    this.dropped = 0; // rows pushed out of view by newer ones
    this.selectedKey = null;
    this.visible = this.columns.map((c) => c.key);
    this.pool = [];
    this.frame = 0;
    this._build();
  }

  _build() {
    this.root.classList.add("vtable");
    this.scroller = document.createElement("div");
    this.scroller.className = "vt-scroll";
    this.header = document.createElement("div");
    this.header.className = "vt-header vt-grid";
    this.body = document.createElement("div");
    this.body.className = "vt-body";
    this.empty = document.createElement("div");
    this.empty.className = "vt-empty";
    this.scroller.append(this.header, this.body);
    this.root.append(this.scroller, this.empty);
    this.scroller.addEventListener("scroll", () => this.schedule(), { passive: true });
    this.body.addEventListener("click", (ev) => {
      const row = ev.target.closest(".vt-row");
      if (!row || row.dataset.index === undefined) return;
      const item = this.at(Number(row.dataset.index));
      if (!item) return;
      this.selectedKey = this.keyOf(item);
      this.onSelect(item);
      this.schedule();
    });
    new ResizeObserver(() => this.schedule()).observe(this.scroller);
    this._layout();
  }

  setEmptyText(text) {
    this.empty.textContent = text;
  }

  /** Show only these column keys, in the table's own order. */
  setVisibleColumns(keys) {
    this.visible = this.columns.map((c) => c.key).filter((k) => keys.includes(k));
    this._layout();
  }

  _layout() {
    const cols = this.columns.filter((c) => this.visible.includes(c.key));
    this.shown = cols;
    // Fixed pixel widths, the same for every row (each row is its own grid, so a
    // content-sized track would differ from row to row); the last one takes the slack.
    const widths = cols.map((c) => c.width || 120);
    const template = widths.map((w, i) => (i === widths.length - 1 ? `minmax(${w}px, 1fr)` : `${w}px`)).join(" ");
    this.root.style.setProperty("--vt-columns", template);
    this.root.style.setProperty("--vt-width", `${widths.reduce((a, b) => a + b, 0)}px`);
    this.header.replaceChildren(...cols.map((c) => {
      const h = document.createElement("div");
      h.className = "vt-cell";
      h.textContent = c.title;
      h.dataset.col = c.key;
      return h;
    }));
    for (const row of this.pool) row.remove();
    this.pool = [];
    this.schedule();
  }

  /** The item at display row `i` (0 = newest). */
  at(i) {
    if (i < 0 || i >= this.count) return undefined;
    return this.buf[(this.next - 1 - i + this.capacity * 2) % this.capacity];
  }

  /** Add items, oldest first. */
  push(items) {
    if (!items.length) return;
    for (const item of items) {
      this.buf[this.next] = item;
      this.next = (this.next + 1) % this.capacity;
      if (this.count < this.capacity) this.count++;
      else this.dropped++;
    }
    // Keep a reader who scrolled down on the same rows.
    if (this.scroller.scrollTop > 0) this.scroller.scrollTop += items.length * this.rowHeight;
    this.schedule();
  }

  clear() {
    this.buf = new Array(this.capacity);
    this.next = 0;
    this.count = 0;
    this.dropped = 0;
    this.scroller.scrollTop = 0;
    this.schedule();
  }

  /** Repaint at the next animation frame; many pushes per frame cost one repaint. */
  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  render() {
    const h = this.rowHeight;
    this.body.style.height = `${this.count * h}px`;
    this.empty.hidden = this.count > 0;
    const top = this.scroller.scrollTop;
    const height = this.scroller.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / h) - 5);
    const last = Math.min(this.count, Math.ceil((top + height) / h) + 5);
    const need = Math.max(0, last - first);
    while (this.pool.length < need) this.pool.push(this._newRow());
    while (this.pool.length > need) this.pool.pop().remove();
    for (let k = 0; k < need; k++) this._fill(this.pool[k], first + k);
  }

  _newRow() {
    const row = document.createElement("div");
    row.className = "vt-row vt-grid";
    for (let c = 0; c < this.shown.length; c++) {
      const cell = document.createElement("div");
      cell.className = "vt-cell";
      row.append(cell);
    }
    const full = document.createElement("div");
    full.className = "vt-full";
    row.append(full);
    this.body.append(row);
    return row;
  }

  _fill(row, i) {
    const item = this.at(i);
    row.dataset.index = String(i);
    row.style.transform = `translateY(${i * this.rowHeight}px)`;
    const full = this.fullRow(item);
    const cells = row.children;
    const key = this.keyOf(item);
    row.className = `vt-row vt-grid ${this.rowClass(item)}${key !== null && key === this.selectedKey ? " selected" : ""}${full !== null ? " vt-fullrow" : ""}`;
    cells[cells.length - 1].textContent = full ?? "";
    for (let c = 0; c < this.shown.length; c++) {
      const col = this.shown[c];
      const cell = cells[c];
      if (full !== null) {
        cell.textContent = "";
        continue;
      }
      const text = String(col.get(item) ?? "");
      if (cell.textContent !== text) {
        cell.textContent = text;
        cell.title = text;
      }
      cell.className = col.cls ? `vt-cell ${col.cls(item)}` : "vt-cell";
    }
  }
}
