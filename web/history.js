/**
 * history.js: the demo page's conversation history, kept across reloads and calls in the browser's
 * localStorage (bounded: the last MAX_MESSAGES settled turns, at most MAX_CHARS of text), or read
 * back from the relay's recordings of a signed-in user (RelayHistory), and the context a new session
 * gets to continue it.
 */
import { CallRequests, getCredentials, joinUrl } from "./realtime-session.js";

const KEY = "realtime-relay.history.v1";
export const MAX_MESSAGES = 200;
export const MAX_CHARS = 100_000;
/** What "continue this conversation" carries into the new session (its last turns). */
export const CONTEXT_MESSAGES = 40;
export const CONTEXT_CHARS = 8000;

/** `{id, role, text, at}` of a settled turn, as stored. */
function stored(message, prefix) {
  return { id: `${prefix}${message.id}`, role: message.role, text: message.text, at: message.at || Date.now() };
}

/** The last messages that fit both bounds. */
function bounded(messages, maxMessages, maxChars) {
  const kept = [];
  let chars = 0;
  for (let i = messages.length - 1; i >= 0 && kept.length < maxMessages; i--) {
    chars += messages[i].text.length;
    if (chars > maxChars) break;
    kept.push(messages[i]);
  }
  return kept.reverse();
}

export class LocalHistory {
  /** @param {Storage | undefined} storage  localStorage by default */
  constructor(storage = globalThis.localStorage) {
    this._storage = storage;
    /** Turns of earlier page loads (this page's own come from the client's state). */
    this.earlier = this._load();
    /** Ids of this page load's turns are prefixed with it (local ids restart at each load). */
    this._prefix = `p${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}_`;
    this._at = new Map();
  }

  _load() {
    try {
      const parsed = JSON.parse(this._storage?.getItem(KEY) || "[]");
      if (!Array.isArray(parsed)) return [];
      return parsed.filter(
        (m) => m && typeof m.id === "string" && typeof m.text === "string" && ["user", "assistant"].includes(m.role),
      );
    } catch {
      return [];
    }
  }

  /**
   * The whole conversation: the earlier turns, then this page's `messages` (the client's state,
   * ids prefixed). Every one of this page's settled turns is saved.
   */
  merge(messages) {
    const own = [];
    for (const m of messages) {
      if (!this._at.has(m.id)) this._at.set(m.id, Date.now());
      own.push({ ...m, id: `${this._prefix}${m.id}`, at: this._at.get(m.id) });
    }
    this._save(own.filter((m) => m.final && m.text));
    return [...this.earlier.map((m) => ({ ...m, final: true, earlier: true })), ...own];
  }

  _save(own) {
    const all = bounded([...this.earlier, ...own.map((m) => stored(m, ""))], MAX_MESSAGES, MAX_CHARS);
    const text = JSON.stringify(all);
    if (text === this._last) return;
    this._last = text;
    try {
      this._storage?.setItem(KEY, text);
    } catch (err) {
      console.warn("voice page: history not saved", err && err.name);
    }
  }

  clear() {
    this.earlier = [];
    this._last = undefined;
    try {
      this._storage?.removeItem(KEY);
    } catch {
      /* nothing stored */
    }
  }
}

const CLEARED_KEY = "realtime-relay.history.relay-cleared-at";
/** How many of the user's conversations the relay is asked for (it gives at most 50). */
export const RELAY_CONVERSATIONS = 20;

/** The relay's `GET /api/conversations`, next to the calls URL it serves. */
function conversationsUrl(options, callsUrl) {
  const base = callsUrl.replace(/\/v1\/realtime\/calls\/?$/, "");
  const route = `/api/conversations?limit=${RELAY_CONVERSATIONS}`;
  return base !== callsUrl ? base + route : joinUrl(options.baseUrl, route);
}

/**
 * The signed-in user's earlier conversations as the relay recorded them: the app's backend mints
 * the page's client secrets with `session.relay.user_id`, and `load()` reads that user's finished,
 * recorded calls with a client secret of its own. Nothing is stored in the browser but when the
 * person last cleared the list (older conversations stay hidden here; the recordings stay).
 */
export class RelayHistory extends LocalHistory {
  _load() {
    return [];
  }

  _save() {}

  /** Reads the conversations with a fresh client secret; false (and a console warning) if it could not. */
  async load(client) {
    const options = client.options;
    if (options.mode === "direct") return false;
    const requests = new CallRequests({ timeoutMs: options.requestTimeoutMs, direct: false });
    try {
      const { token, callsUrl } = await getCredentials(options, requests);
      const url = conversationsUrl(options, callsUrl);
      const response = await requests.fetch(url, { headers: { Authorization: `Bearer ${token}` } }, "history");
      const body = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(body?.error?.message || `HTTP ${response.status}`);
      this.earlier = this._turns(Array.isArray(body.data) ? body.data : []);
      return true;
    } catch (err) {
      console.warn("voice page: no history from the relay:", err && err.message);
      return false;
    }
  }

  /** The turns of the conversations (newest first from the relay), oldest first, bounded. */
  _turns(conversations) {
    const cleared = Number(this._storage?.getItem(CLEARED_KEY) || 0);
    const turns = [];
    for (const c of [...conversations].reverse()) {
      if (!c || !Array.isArray(c.transcript) || Number(c.started_at || 0) * 1000 <= cleared) continue;
      c.transcript.forEach((turn, i) => {
        if (turn && typeof turn.text === "string" && turn.text && ["user", "assistant"].includes(turn.role)) {
          turns.push({ id: `r_${c.call_id}_${i}`, role: turn.role, text: turn.text, at: Number(turn.t || 0) * 1000 });
        }
      });
    }
    return bounded(turns, MAX_MESSAGES, MAX_CHARS);
  }

  clear() {
    this.earlier = [];
    try {
      this._storage?.setItem(CLEARED_KEY, String(Date.now()));
    } catch {
      /* not remembered past this page */
    }
  }
}

/**
 * The earlier turns as one user message that opens a new session (the relay lets a browser add
 * only user messages: the assistant's turns are quoted in it), or null without any.
 */
export function contextItem(messages) {
  const turns = bounded(
    messages.filter((m) => m.final && m.text),
    CONTEXT_MESSAGES,
    CONTEXT_CHARS,
  );
  if (!turns.length) return null;
  const lines = turns.map((m) => `${m.role === "user" ? "User" : "Assistant"}: ${m.text}`);
  const text =
    "Context: this call continues an earlier conversation. Its last turns were:\n" +
    lines.join("\n") +
    "\n(End of the earlier conversation. Carry on from there.)";
  return {
    type: "conversation.item.create",
    item: { type: "message", role: "user", content: [{ type: "input_text", text }] },
  };
}
