// A flow stream that reconnects by itself, with backoff, and says what it is doing.
//
// Messages are parsed and handed over in batches (one callback per animation
// frame at most), because at 2,000 flows/s a callback per message would make
// every consumer do per-flow work on the main thread.

import { wsTarget, promptForToken, getToken } from "./api.js";

const BACKOFF_S = [1, 2, 4, 8, 15];

export class LiveStream {
  /**
   * @param {object} opts {path, params: () => pairs, onBatch(events), onState(state),
   *   onError(message)}; state is {state: "connecting"|"live"|"retrying"|"stopped"|"error",
   *   retryIn?: seconds, message?}
   */
  constructor(opts) {
    this.opts = opts;
    this.ws = null;
    this.attempt = 0;
    this.pending = [];
    this.frame = 0;
    this.timer = 0;
    this.countdown = 0;
    this.running = false;
    this.generation = 0;
    this.received = 0;
  }

  start() {
    this.running = true;
    this.attempt = 0;
    this._connect(this.opts.params(false));
  }

  /** Reconnect now with fresh parameters (a new filter). */
  restart() {
    this.stop();
    this.start();
  }

  stop() {
    this.running = false;
    this.generation++;
    clearTimeout(this.timer);
    clearInterval(this.countdown);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close(1000);
      this.ws = null;
    }
    this.pending = [];
    this._state({ state: "stopped" });
  }

  _state(s) {
    this.state = s;
    if (this.opts.onState) this.opts.onState(s);
  }

  _connect(params) {
    const gen = ++this.generation;
    this._state({ state: "connecting" });
    let ws;
    try {
      const { url, protocols } = wsTarget(this.opts.path, params);
      ws = new WebSocket(url, protocols);
    } catch (err) {
      this._state({ state: "error", message: String(err) });
      return;
    }
    this.ws = ws;
    let errorMessage = "";
    ws.onopen = () => {
      if (gen !== this.generation) return;
      this.attempt = 0;
      this._state({ state: "live" });
    };
    ws.onmessage = (ev) => {
      if (gen !== this.generation) return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (_) {
        return; // not JSON: nothing a flow table can show
      }
      if (msg && msg.ok === false) {
        errorMessage = msg.error || "the server refused the stream";
        return;
      }
      this.received++;
      this.pending.push(msg);
      // rAF pauses in a hidden tab: flush anyway once a batch is large, so memory stays bounded.
      if (this.pending.length >= 5000) this._flush();
      else if (!this.frame) this.frame = requestAnimationFrame(() => this._flush());
    };
    ws.onclose = (ev) => {
      if (gen !== this.generation) return;
      this.ws = null;
      this._flush();
      if (!this.running) return;
      if (ev.code === 1008 && errorMessage) {
        // A bad request (bad filter): retrying would fail the same way.
        if (/\btoken\b|unauthori[sz]ed|forbidden/i.test(errorMessage)) {
          promptForToken(getToken() ? "The token was refused; enter the right one." : undefined)
            .then(() => this.running && this._connect(this.opts.params(false)));
          return;
        }
        this._state({ state: "error", message: errorMessage });
        if (this.opts.onError) this.opts.onError(errorMessage);
        return;
      }
      if (ev.code === 4401 || ev.code === 4003) {
        promptForToken().then(() => this.running && this._connect(this.opts.params(false)));
        return;
      }
      this._retry();
    };
  }

  _retry() {
    const delay = BACKOFF_S[Math.min(this.attempt, BACKOFF_S.length - 1)];
    this.attempt++;
    let left = delay;
    this._state({ state: "retrying", retryIn: left });
    clearInterval(this.countdown);
    this.countdown = setInterval(() => {
      left = Math.max(0, left - 1);
      if (this.running) this._state({ state: "retrying", retryIn: left });
    }, 1000);
    this.timer = setTimeout(() => {
      clearInterval(this.countdown);
      if (this.running) this._connect(this.opts.params(true));
    }, delay * 1000);
  }

  _flush() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    if (!this.pending.length) return;
    const batch = this.pending;
    this.pending = [];
    this.opts.onBatch(batch);
  }
}
