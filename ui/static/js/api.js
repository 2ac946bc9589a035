// Talking to the Spyglass API: one place for the token, the error envelope and URLs.
//
// Why one module: every view needs the same three things (send the token, turn
// the API's `{ok:false, error}` envelope into a readable message, ask for the
// token once when the API says 401), and getting any of them wrong in one view
// would make that view alone fail in confusing ways.

const TOKEN_KEY = "spyglass.token";
const API = "/api/v1";

export class ApiError extends Error {
  constructor(status, message, path) {
    super(message);
    this.status = status;
    this.path = path;
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// A single pending prompt shared by every caller that met a 401 at the same time,
// so the user is asked once, not once per request.
let pendingPrompt = null;

/** Ask for the token in the page's dialog; resolves with the token the user typed. */
export function promptForToken(reason) {
  if (pendingPrompt) return pendingPrompt;
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  const why = document.getElementById("token-reason");
  why.textContent = reason || "This Spyglass API needs a token: the one given to spyglass up --token, or the local one (sudo cat /run/spyglass/token).";
  input.value = "";
  pendingPrompt = new Promise((resolve) => {
    const done = (ev) => {
      ev.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      dialog.close();
      form.removeEventListener("submit", done);
      setToken(token);
      pendingPrompt = null;
      resolve(token);
    };
    const form = dialog.querySelector("form");
    form.addEventListener("submit", done);
    dialog.showModal();
    input.focus();
  });
  return pendingPrompt;
}

function authHeaders() {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** Build `/api/v1/<path>?<params>`; params is a URLSearchParams, an object or pairs. */
export function apiUrl(path, params) {
  const qs = params instanceof URLSearchParams ? params : new URLSearchParams(params || []);
  const s = qs.toString();
  return `${API}${path}${s ? "?" + s : ""}`;
}

async function errorFrom(resp, path) {
  let message = `${resp.status} ${resp.statusText}`;
  try {
    const body = await resp.json();
    if (body && typeof body.error === "string") message = body.error;
  } catch (_) {
    /* not JSON: keep the status line */
  }
  return new ApiError(resp.status, message, path);
}

/** GET an API path as JSON. A 401 asks for the token once and retries. */
export async function apiGet(path, params, { signal } = {}) {
  const url = apiUrl(path, params);
  for (let attempt = 0; ; attempt++) {
    let resp;
    try {
      resp = await fetch(url, { headers: authHeaders(), signal });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, `cannot reach the Spyglass API (${err.message}); is \`spyglass up\` running?`, path);
    }
    if (resp.status === 401 && attempt < 3) {
      const wrong = getToken() ? "The token was refused; enter the right one." : "";
      setToken("");
      await promptForToken(wrong || undefined);
      continue;
    }
    if (!resp.ok) throw await errorFrom(resp, path);
    return resp.json();
  }
}

/** Whether a failed request means "no flow store here" (the API's 503 for history). */
export function isNoStore(err) {
  return err instanceof ApiError && (err.status === 503 || err.status === 404) &&
    (err.status === 404 || /store/i.test(err.message));
}

// Characters allowed in a WebSocket subprotocol name (an HTTP token).
const TOKEN_CHARS = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Where and how to open a stream: {url, protocols}. Browsers cannot set headers on a
 * WebSocket, so the token is offered as the subprotocol `spyglass.bearer.<token>` (kept
 * out of URLs and access logs), or as `?token=` when it has characters a protocol cannot. */
export function wsTarget(path, params) {
  const qs = new URLSearchParams(params || []);
  const token = getToken();
  let protocols = [];
  if (token && TOKEN_CHARS.test(token)) protocols = ["spyglass", `spyglass.bearer.${token}`];
  else if (token) qs.set("token", token);
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const s = qs.toString();
  return { url: `${proto}//${location.host}${API}${path}${s ? "?" + s : ""}`, protocols };
}
