/**
 * realtime-session.js: what a call needs before any transport carries it: the session configuration,
 * the key (a client secret) with the endpoint to use it on, and bounded, cancellable HTTP requests.
 *
 * Relay mode (the default): the key comes from the host app's token URL (or `getToken`), the endpoint
 * is the relay's `/v1/realtime/calls`. Direct mode: an OpenAI ephemeral key from `directSessionUrl`,
 * the endpoint is OpenAI's `${base_url}/realtime/calls`.
 */
import { Aborted, ErrorCode, RealtimeClientError, clause, httpError, unreachable } from "./realtime-errors.js";

export function joinUrl(base, path) {
  if (!base) return path;
  return base.replace(/\/+$/, "") + path;
}

export function absoluteUrl(url) {
  try {
    return new URL(url, globalThis.location?.href).href;
  } catch {
    return url;
  }
}

/** `audio.input.transcription` from the options: the model, and the `language` (ISO-639-1) if set. */
export function transcriptionConfig(options) {
  if (!options.transcriptionModel) return null;
  const transcription = { model: options.transcriptionModel };
  if (options.language) transcription.language = options.language;
  return transcription;
}

/** The session of a call (GA shape, with `session.type`), from the client's options. */
export function sessionConfig(options) {
  const session = {
    type: "realtime",
    model: options.model,
    audio: {
      input: { transcription: transcriptionConfig(options) },
      output: { voice: options.voice },
    },
  };
  if (options.instructions !== undefined) session.instructions = options.instructions;
  return session;
}

/**
 * The HTTP requests of one call's set-up: each bounded by `timeoutMs`; `cancel()` aborts them all,
 * and they then reject with `Aborted`. Other failures reject with a RealtimeClientError.
 */
export class CallRequests {
  /** @param {{timeoutMs: number, direct: boolean}} options  `direct`: the offer goes to OpenAI itself */
  constructor({ timeoutMs, direct }) {
    this.timeoutMs = timeoutMs;
    this.direct = direct;
    this.cancelled = false;
    this._controllers = new Set();
  }

  /** `fetch(url, init)`; `what` ("token", "direct" or "offer") says which error a failure is. */
  async fetch(url, init, what) {
    if (this.cancelled) throw new Aborted();
    const controller = new AbortController();
    this._controllers.add(controller);
    const timer = setTimeout(() => controller.abort(), this.timeoutMs);
    try {
      return await fetch(url, { ...init, signal: controller.signal });
    } catch (err) {
      throw this._failure(url, err, what, controller.signal.aborted);
    } finally {
      clearTimeout(timer);
      this._controllers.delete(controller);
    }
  }

  _failure(url, err, what, timedOut) {
    if (this.cancelled) return new Aborted();
    const where = absoluteUrl(url);
    if (!timedOut) return unreachable(where, err, what === "offer" && this.direct);
    return new RealtimeClientError(
      what === "offer" ? ErrorCode.UPSTREAM_TIMEOUT : ErrorCode.RELAY_UNREACHABLE,
      `No answer from ${where} within ${Math.round(this.timeoutMs / 1000)} s. ` +
        "Check your connection and that the relay is running, then try again.",
      { cause: err },
    );
  }

  cancel() {
    this.cancelled = true;
    for (const controller of this._controllers) controller.abort();
  }
}

/** POSTs `body` as JSON (with `tokenRequestInit`) and returns the parsed answer. */
async function postForKey(options, requests, url, body, what) {
  const extra = options.tokenRequestInit || {};
  const init = {
    method: "POST",
    ...extra,
    headers: { "Content-Type": "application/json", ...(extra.headers || {}) },
    body: JSON.stringify(body),
  };
  const response = await requests.fetch(url, init, what);
  if (!response.ok) throw await httpError(response, what, absoluteUrl(url));
  return response.json();
}

async function directCredentials(options, requests, session) {
  const url = joinUrl(options.baseUrl, options.directSessionUrl);
  const { model, voice, transcriptionModel } = options;
  const body = await postForKey(options, requests, url, { model, voice, transcriptionModel, session }, "direct");
  const token = body.client_secret?.value ?? body.value;
  if (!token) throw new RealtimeClientError(ErrorCode.TOKEN_FAILED, `${url} returned no key.`);
  const base = body.base_url || "https://api.openai.com/v1";
  return { token, callsUrl: options.callsUrl || joinUrl(base, "/realtime/calls") };
}

async function tokenFromCallback(getToken, session) {
  let token;
  try {
    token = await getToken({ session });
  } catch (err) {
    if (err instanceof RealtimeClientError) throw err;
    throw new RealtimeClientError(ErrorCode.TOKEN_FAILED, `Could not get a session key: ${clause(err && err.message)}.`, {
      cause: err,
    });
  }
  return token && typeof token === "object" ? token.value ?? token.client_secret?.value : token;
}

async function tokenFromUrl(options, requests, session) {
  const url = joinUrl(options.baseUrl, options.tokenUrl);
  const body = await postForKey(options, requests, url, { session }, "token");
  return body.value ?? body.client_secret?.value;
}

/** The key of the call and where to use it: `{token, callsUrl}`. */
export async function getCredentials(options, requests) {
  const session = sessionConfig(options);
  if (options.mode === "direct") return directCredentials(options, requests, session);
  const token =
    typeof options.getToken === "function"
      ? await tokenFromCallback(options.getToken, session)
      : await tokenFromUrl(options, requests, session);
  if (!token) throw new RealtimeClientError(ErrorCode.TOKEN_FAILED, "The token URL returned no key (`value`).");
  return { token: String(token), callsUrl: options.callsUrl || joinUrl(options.baseUrl, "/v1/realtime/calls") };
}

/** The relay's TURN route, next to the calls URL it serves (`…/v1/realtime/calls` -> `…/api/turn_credentials`). */
function turnCredentialsUrl(options, callsUrl) {
  const route = "/api/turn_credentials?optional=1";
  const base = callsUrl.replace(/\/v1\/realtime\/calls\/?$/, "");
  return base !== callsUrl ? base + route : joinUrl(options.baseUrl, route);
}

/**
 * The ICE servers of a call: the client's own `iceServers`, then the short-lived TURN credentials the relay
 * hands out when it has a TURN server (`POST /api/turn_credentials`, with the call's key). A relay without
 * TURN answers 204; any failure here leaves the client's own servers (the offer then reports what is wrong).
 * Direct mode (the offer goes to OpenAI) asks nothing.
 */
export async function callIceServers(options, callsUrl, token, request) {
  const own = Array.isArray(options.iceServers) ? options.iceServers : [];
  if (options.mode === "direct") return own;
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  try {
    const response = await request(turnCredentialsUrl(options, callsUrl), { method: "POST", headers }, "turn");
    if (response.status !== 200) return own;
    const body = await response.json();
    const servers = Array.isArray(body?.ice_servers) ? body.ice_servers.filter((s) => s && s.urls) : [];
    return [...own, ...servers];
  } catch (err) {
    if (err instanceof Aborted) throw err;
    console.warn("realtime-client: no TURN credentials from the relay:", err && err.message);
    return own;
  }
}
