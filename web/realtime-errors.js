/**
 * realtime-errors.js: every failure of a call, as a `RealtimeClientError` with a stable `code` and a
 * message a person can act on. Shared by the call core (realtime-client.js) and the transports.
 */

/** Every `code` a `RealtimeClientError` can carry. */
export const ErrorCode = Object.freeze({
  INSECURE_ORIGIN: "insecure_origin",
  UNSUPPORTED_BROWSER: "unsupported_browser",
  MIC_PERMISSION_DENIED: "mic_permission_denied",
  NO_MIC: "no_mic",
  MIC_BUSY: "mic_busy",
  RELAY_UNREACHABLE: "relay_unreachable",
  TOKEN_FAILED: "token_failed",
  UNAUTHORIZED: "unauthorized",
  UPSTREAM_UNREACHABLE: "upstream_unreachable",
  UPSTREAM_TIMEOUT: "upstream_timeout",
  RELAY_BUSY: "relay_busy",
  RATE_LIMITED: "rate_limited",
  DIRECT_MODE_DISABLED: "direct_mode_disabled",
  RELAY_ERROR: "relay_error",
  CONNECTION_FAILED: "connection_failed",
  CONNECTION_LOST: "connection_lost",
  CALL_ENDED: "call_ended",
  AUTOPLAY_BLOCKED: "autoplay_blocked",
  TRANSCRIPTION_MISSING: "transcription_missing",
  TRANSCRIPTION_FAILED: "transcription_failed",
  SERVER_ERROR: "server_error",
  NOT_CONNECTED: "not_connected",
});

/** A failure with a stable `code`, a message a person can act on, and the HTTP `status` if any. */
export class RealtimeClientError extends Error {
  /**
   * @param {string} code  one of `ErrorCode`
   * @param {string} message
   * @param {{status?: number | null, detail?: object | null, fatal?: boolean, cause?: unknown}} [options]
   */
  constructor(code, message, { status = null, detail = null, fatal = true, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "RealtimeClientError";
    /** One of `ErrorCode`. */
    this.code = code;
    /** HTTP status of the failed request, or null. */
    this.status = status;
    /** The server's error object (OpenAI's envelope `error`), or null. */
    this.detail = detail;
    /** False when the call goes on (autoplay blocked, missing transcription, an `error` event). */
    this.fatal = fatal;
  }
}

/**
 * `text` to go inside a sentence (before ")" or "."): trimmed, without its own closing punctuation, so
 * "…: Not found." + "." never reads "Not found..".
 */
export function clause(text) {
  return String(text ?? "").trim().replace(/[\s.!?;:,\u3002]+$/u, "");
}

/** Thrown inside a call's set-up once the call was given up (disconnect, a newer call): not a failure. */
export class Aborted extends Error {}

// ---- HTTP ----------------------------------------------------------------------------------------

const unauthorizedMessage = (status, tail) =>
  `The relay refused the session key (HTTP ${status}${tail}). ` +
  "The key may have expired or be wrong: press Start to get a new one; if it keeps failing, " +
  "check the relay's API key in the app's backend.";

/**
 * Statuses that mean the same whatever the request was.
 *
 * @type {Record<number, {code: string, message: (status: number, tail: string) => string}>}
 */
const STATUS_ERRORS = {
  401: { code: ErrorCode.UNAUTHORIZED, message: unauthorizedMessage },
  403: { code: ErrorCode.UNAUTHORIZED, message: unauthorizedMessage },
  502: {
    code: ErrorCode.UPSTREAM_UNREACHABLE,
    message: (status, tail) =>
      `The relay could not reach the voice service (HTTP 502${tail}). ` +
      "This is on the server side: try again in a moment, or tell the operator.",
  },
  504: {
    code: ErrorCode.UPSTREAM_TIMEOUT,
    message: (status, tail) =>
      `The voice service did not answer the relay in time (HTTP 504${tail}). Try again in a moment.`,
  },
  503: {
    code: ErrorCode.RELAY_BUSY,
    message: (status, tail) => `The relay is full or restarting (HTTP 503${tail}). Try again in a minute.`,
  },
  429: {
    code: ErrorCode.RATE_LIMITED,
    message: (status, tail) => `Too many requests (HTTP 429${tail}). Wait a little, then try again.`,
  },
};

/** The other statuses, by what was requested ("token", "direct" or "offer"): `[code, message]`. */
function requestFailure(what, status, tail, url) {
  if (what === "direct" && (status === 404 || status === 405)) {
    return [
      ErrorCode.DIRECT_MODE_DISABLED,
      `Direct mode is not enabled on this server (HTTP ${status} from ${url}). ` +
        "Switch to relay mode, or ask the operator to enable direct sessions.",
    ];
  }
  if (what === "token" || what === "direct") {
    return [
      ErrorCode.TOKEN_FAILED,
      `Could not get a session key from ${url} (HTTP ${status}${tail}). ` +
        "Check that the app's backend is running and allowed to mint keys, then try again.",
    ];
  }
  return [
    ErrorCode.RELAY_ERROR,
    `The relay rejected the call (HTTP ${status}${tail}). Try again; if it persists, tell the operator.`,
  ];
}

/** The body of a failed response: the server's error object if it is JSON, and the text. */
async function errorBody(response) {
  let detail = null;
  let text = "";
  try {
    text = await response.text();
    const parsed = JSON.parse(text);
    detail = parsed && typeof parsed === "object" ? parsed.error ?? parsed : null;
  } catch {
    /* not JSON: keep the text */
  }
  return { detail, text };
}

/** Turns an HTTP failure into a RealtimeClientError with an actionable message. */
export async function httpError(response, what, url) {
  const { detail, text } = await errorBody(response);
  const status = response.status;
  const said = clause((detail && (detail.message || detail.code)) || text.slice(0, 200) || response.statusText);
  const tail = said ? `: ${said}` : "";
  const known = STATUS_ERRORS[status];
  const [code, message] = known ? [known.code, known.message(status, tail)] : requestFailure(what, status, tail, url);
  return new RealtimeClientError(code, message, { status, detail });
}

/** A request that got no answer at all (`direct`: the browser's own request to OpenAI). */
export function unreachable(url, cause, direct = false) {
  const message = direct
    ? `Cannot reach the voice service at ${url} directly: this network (or the service) refuses the ` +
      "browser's request. Switch to relay mode, which only needs to reach this site."
    : `Cannot reach the relay at ${url}: the network request failed before any answer. ` +
      "Check your connection and that the relay is running, then try again.";
  return new RealtimeClientError(ErrorCode.RELAY_UNREACHABLE, message, { cause });
}

// ---- the browser and the microphone ----------------------------------------------------------------

/** `getUserMedia` failures, by the DOMException's name. */
const MIC_ERRORS = [
  {
    names: ["NotAllowedError", "SecurityError", "PermissionDeniedError"],
    code: ErrorCode.MIC_PERMISSION_DENIED,
    message:
      "Microphone access was denied. Allow the microphone for this site (the icon at the left of " +
      "the address bar, or the browser's site settings), then press Start again.",
  },
  {
    names: ["NotFoundError", "DevicesNotFoundError", "OverconstrainedError"],
    code: ErrorCode.NO_MIC,
    message:
      "No microphone was found. Plug in or enable a microphone (and check the system's sound " +
      "settings), then press Start again.",
  },
  {
    names: ["NotReadableError", "TrackStartError", "AbortError"],
    code: ErrorCode.MIC_BUSY,
    message:
      "The microphone could not be started: another app may be using it. Close that app (or pick " +
      "another microphone), then press Start again.",
  },
];

export function micError(err) {
  const name = err && err.name;
  const known = MIC_ERRORS.find((entry) => entry.names.includes(name));
  if (known) return new RealtimeClientError(known.code, known.message, { cause: err });
  return new RealtimeClientError(
    ErrorCode.NO_MIC,
    `The microphone could not be opened (${name || "error"}: ${clause(err && err.message)}). Press Start to try again.`,
    { cause: err },
  );
}

export function insecureOrigin() {
  return new RealtimeClientError(
    ErrorCode.INSECURE_ORIGIN,
    `Voice chat needs a secure page, and ${globalThis.location?.origin ?? "this page"} is not one: ` +
      "browsers only give the microphone to https:// pages (or localhost). Open this page over https://.",
  );
}

export function unsupportedBrowser() {
  return new RealtimeClientError(
    ErrorCode.UNSUPPORTED_BROWSER,
    "This browser cannot make voice calls (no WebRTC or microphone API). Use a current Chrome, " +
      "Edge, Firefox or Safari.",
  );
}

// ---- the call ----------------------------------------------------------------------------------------

/** Any other failure of the set-up. */
export function setupError(err) {
  if (err instanceof RealtimeClientError) return err;
  return new RealtimeClientError(ErrorCode.CONNECTION_FAILED, `The call could not be set up: ${clause(err && err.message)}.`, {
    cause: err,
  });
}

/** A call that ended without `disconnect()`: `code` is CALL_ENDED (by the server) or CONNECTION_LOST. */
export function callEnded(code, lastServerError) {
  if (code === ErrorCode.CONNECTION_LOST) {
    return new RealtimeClientError(
      ErrorCode.CONNECTION_LOST,
      "The connection to the relay was lost. Check your network, then press Start to call again.",
    );
  }
  return new RealtimeClientError(
    ErrorCode.CALL_ENDED,
    lastServerError
      ? `The call was ended by the server: ${clause(lastServerError)}. Press Start to call again.`
      : "The call was ended by the server. Press Start to call again.",
  );
}

export function autoplayBlocked(cause) {
  return new RealtimeClientError(
    ErrorCode.AUTOPLAY_BLOCKED,
    "The browser blocked the agent's audio (autoplay). Press \u201cEnable audio\u201d to hear the agent.",
    { fatal: false, cause },
  );
}
