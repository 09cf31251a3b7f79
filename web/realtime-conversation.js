/**
 * realtime-conversation.js: OpenAI Realtime server events, turned into the state of a call: the
 * user's and the agent's transcripts, the conversation so far, the speaking flags, and the errors
 * that let the call go on (a transcription failed or never came, an `error` event). It also sends
 * typed messages and asks for responses one at a time.
 *
 * Transport-agnostic: events come in parsed (`handle`), client events go out through the host.
 */
import { ErrorCode, RealtimeClientError, clause } from "./realtime-errors.js";

/**
 * What the conversation needs of its client.
 *
 * @typedef {object} ConversationHost
 * @property {() => object} state  The client's state snapshot.
 * @property {(patch: object) => void} setState
 * @property {(error: RealtimeClientError) => void} report
 * @property {(name: string, ...args: unknown[]) => void} notify  Calls the option callback `name`.
 * @property {(event: object) => boolean} send  Sends a client event.
 * @property {() => object} options  The client's options.
 */

/** The handler (a method name) of each server event the conversation follows. */
const HANDLERS = new Map([
  ["input_audio_buffer.speech_started", "_onSpeechStarted"],
  ["input_audio_buffer.speech_stopped", "_onSpeechStopped"],
  ["input_audio_buffer.committed", "_onCommitted"],
  ["conversation.item.input_audio_transcription.delta", "_onUserDelta"],
  ["conversation.item.input_audio_transcription.completed", "_onUserCompleted"],
  ["conversation.item.input_audio_transcription.failed", "_onUserFailed"],
  ["response.created", "_onResponseCreated"],
  ["response.output_item.added", "_onOutputItemAdded"],
  ["output_audio_buffer.started", "_onAgentAudioStarted"],
  ["output_audio_buffer.stopped", "_onAgentAudioStopped"],
  ["output_audio_buffer.cleared", "_onAgentAudioStopped"],
  ["response.output_audio_transcript.delta", "_onAgentDelta"], // GA
  ["response.audio_transcript.delta", "_onAgentDelta"], // beta
  ["response.output_text.delta", "_onAgentDelta"], // GA, text-only responses
  ["response.text.delta", "_onAgentDelta"], // beta, text-only responses
  ["response.output_audio_transcript.done", "_onAgentDone"],
  ["response.audio_transcript.done", "_onAgentDone"],
  ["response.output_text.done", "_onAgentDone"],
  ["response.text.done", "_onAgentDone"],
  ["response.done", "_onResponseDone"],
  ["error", "_onServerError"],
]);

/** Where the `.done` events of the agent's turn carry the whole text. */
const AGENT_DONE_FIELDS = new Map([
  ["response.output_audio_transcript.done", "transcript"],
  ["response.audio_transcript.done", "transcript"],
  ["response.output_text.done", "text"],
  ["response.text.done", "text"],
]);

/** A request for a response still unanswered after this long no longer holds the next one back. */
const STALE_REQUEST_MS = 15000;

function responseText(response) {
  const parts = [];
  for (const item of response.output || []) {
    for (const c of item.content || []) parts.push(c.transcript || c.text || "");
  }
  return parts.join("");
}

export class Conversation {
  /** @param {ConversationHost} host */
  constructor(host) {
    this._host = host;
    /** Message id -> its index in `state.messages` (kept across calls, like the messages). */
    this._messageIndex = new Map();
    this._localCounter = 0;
    this._requestCounter = 0;
    this._watchdogs = new Map();
    this.reset();
  }

  /** Starts a new call: forgets the last call's turns (not the messages shown). */
  reset() {
    this.stop();
    this._transcriptItem = null; // the user turn shown as userTranscript
    this._userText = new Map();
    this._userDone = new Set();
    this._transcriptionSeen = new Set();
    this._agentText = "";
    this._agentItem = null;
    this._activeResponse = null;
    this._responseQueued = false;
    this._pendingRequest = null;
    this._pendingSince = 0;
    /** The last `error` event's message: it explains a call that the server then ends. */
    this.lastServerError = null;
  }

  /** The call is over: no more "no transcript" warnings. */
  stop() {
    for (const timer of this._watchdogs.values()) clearTimeout(timer);
    this._watchdogs = new Map();
  }

  /** Follows one server event. */
  handle(event) {
    const method = HANDLERS.get(event.type);
    if (method) this[method](event);
  }

  /** Sends a typed message, shows it, and asks for an answer. */
  sendText(text) {
    this._host.send({
      type: "conversation.item.create",
      item: { type: "message", role: "user", content: [{ type: "input_text", text }] },
    });
    this._localCounter += 1;
    this._upsert(`local_${this._localCounter}`, { role: "user", text, final: true, source: "text" });
    this._requestResponse();
  }

  /** Empties both transcripts and the conversation shown so far. */
  clear() {
    this._messageIndex = new Map();
    this._set({ userTranscript: "", userTranscriptFinal: true, agentTranscript: "", messages: Object.freeze([]) });
  }

  _set(patch) {
    this._host.setState(patch);
  }

  _upsert(id, fields) {
    const messages = [...this._host.state().messages];
    const index = this._messageIndex.get(id);
    if (index === undefined) {
      this._messageIndex.set(id, messages.length);
      messages.push(Object.freeze({ id, interrupted: false, ...fields }));
    } else {
      messages[index] = Object.freeze({ ...messages[index], ...fields });
    }
    this._set({ messages: Object.freeze(messages) });
  }

  // ---- the user's turns ----------------------------------------------------------------------

  _onSpeechStarted(event) {
    this._set({ isSpeaking: true });
    if (event.item_id) this._beginUserTurn(event.item_id);
  }

  _onSpeechStopped(event) {
    this._set({ isSpeaking: false });
    if (event.item_id) this._watchTranscription(event.item_id);
  }

  _onCommitted(event) {
    if (!event.item_id) return;
    this._beginUserTurn(event.item_id);
    this._watchTranscription(event.item_id);
  }

  _onUserDelta(event) {
    const id = event.item_id;
    const delta = event.delta || "";
    const text = (this._userText.get(id) || "") + delta;
    this._transcribedText(id, text, false);
    this._transcriptItem = id;
    this._set({ userTranscript: text, userTranscriptFinal: false });
    this._host.notify("onTranscriptDelta", delta, event);
  }

  _onUserCompleted(event) {
    const id = event.item_id;
    const transcript = event.transcript ?? this._userText.get(id) ?? "";
    this._transcribedText(id, transcript, true);
    // A late completion of an older turn does not replace a newer turn in progress.
    const current = this._transcriptItem;
    if (!current || current === id || this._userDone.has(current)) {
      this._transcriptItem = id;
      this._set({ userTranscript: transcript, userTranscriptFinal: true });
    }
    this._host.notify("onTranscriptDone", transcript, event);
  }

  /** The transcription of user turn `id` so far (`final`: all of it), shown in the conversation. */
  _transcribedText(id, text, final) {
    this._transcribed(id);
    this._userText.set(id, text);
    if (final) this._userDone.add(id);
    this._upsert(id, { role: "user", text, final, source: "voice" });
  }

  _onUserFailed(event) {
    const id = event.item_id;
    this._transcribed(id);
    this._upsert(id, { role: "user", text: "", final: true, source: "voice", failed: true });
    const reason = event.error?.message || "unknown reason";
    this._host.report(
      new RealtimeClientError(
        ErrorCode.TRANSCRIPTION_FAILED,
        `Your last words could not be transcribed (${clause(reason)}). The assistant may still have heard you; ` +
          "speak clearly and close to the microphone.",
        { fatal: false, detail: event.error ?? null },
      ),
    );
  }

  _beginUserTurn(id) {
    if (!id || this._messageIndex.has(id)) return;
    this._upsert(id, { role: "user", text: "", final: false, source: "voice" });
  }

  /** Warns when a finished user turn gets no transcription event within `transcriptionTimeoutMs`. */
  _watchTranscription(id) {
    const { transcriptionTimeoutMs: ms, transcriptionModel } = this._host.options();
    if (!ms || !transcriptionModel || this._transcriptionSeen.has(id) || this._watchdogs.has(id)) return;
    const timer = setTimeout(() => {
      this._watchdogs.delete(id);
      if (this._transcriptionSeen.has(id) || !this._host.state().isConnected) return;
      this._host.report(
        new RealtimeClientError(
          ErrorCode.TRANSCRIPTION_MISSING,
          `No transcript of your speech arrived within ${Math.round(ms / 1000)} s. The agent may still hear you; ` +
            "if it keeps happening, check that transcription is enabled for this session " +
            `(transcription model \u201c${transcriptionModel}\u201d).`,
          { fatal: false },
        ),
      );
    }, ms);
    this._watchdogs.set(id, timer);
  }

  _transcribed(id) {
    this._transcriptionSeen.add(id);
    clearTimeout(this._watchdogs.get(id));
    this._watchdogs.delete(id);
    if (this._host.state().error?.code === ErrorCode.TRANSCRIPTION_MISSING) this._set({ error: null });
  }

  // ---- the agent's turns ---------------------------------------------------------------------

  _onResponseCreated(event) {
    // (The pending request stays until response.done: this response may be one the server
    // started by itself, and then ours is refused with an error that names it.)
    this._activeResponse = event.response?.id || true;
    this._agentText = "";
    this._agentItem = null;
    this._set({ agentTranscript: "" });
  }

  _onOutputItemAdded(event) {
    if (event.item?.role === "assistant" && event.item.id) this._agentItem = event.item.id;
  }

  _onAgentAudioStarted() {
    this._set({ isAgentSpeaking: true });
  }

  _onAgentAudioStopped() {
    this._set({ isAgentSpeaking: false });
  }

  _onAgentDelta(event) {
    this._showAgentText(this._agentText + (event.delta || ""), event);
  }

  _onAgentDone(event) {
    const full = event[AGENT_DONE_FIELDS.get(event.type)];
    if (typeof full === "string" && full.length >= this._agentText.length) this._showAgentText(full, event);
  }

  _showAgentText(text, event) {
    this._agentText = text;
    this._upsert(this._agentMessageId(event), { role: "assistant", text, final: false });
    this._set({ agentTranscript: text });
  }

  _onResponseDone(event) {
    const response = event.response || {};
    const interrupted = response.status === "cancelled" || response.status === "incomplete";
    const text = this._agentText || responseText(response);
    if (text || interrupted) {
      this._upsert(this._agentMessageId(event), { role: "assistant", text, final: true, interrupted });
    }
    this._activeResponse = null;
    this._pendingRequest = null;
    this._host.notify("onAgentResponse", text, response);
    if (this._responseQueued) {
      this._responseQueued = false;
      this._requestResponse();
    }
  }

  _agentMessageId(event) {
    return event.item_id || this._agentItem || `resp_${event.response_id || event.response?.id || "current"}`;
  }

  // ---- responses, one at a time --------------------------------------------------------------

  /** Asks for a response, or queues the request behind the response in progress (OpenAI
   * refuses a second one with `conversation_already_has_active_response`). */
  _requestResponse() {
    const stale = this._pendingRequest && Date.now() - this._pendingSince > STALE_REQUEST_MS;
    if (this._activeResponse || (this._pendingRequest && !stale)) {
      this._responseQueued = true;
      return;
    }
    this._requestCounter += 1;
    this._pendingSince = Date.now();
    this._pendingRequest = `client_response_create_${this._requestCounter}`;
    this._host.send({ type: "response.create", event_id: this._pendingRequest });
  }

  _onServerError(event) {
    const e = event.error || {};
    const ours = this._pendingRequest && (e.event_id === this._pendingRequest || !e.event_id);
    if (ours && e.code === "conversation_already_has_active_response") {
      // A response started on its own (server VAD) just before ours: ask again after it.
      this._pendingRequest = null;
      if (this._activeResponse) this._responseQueued = true;
      else this._requestResponse();
      return;
    }
    if (this._pendingRequest && e.event_id === this._pendingRequest) this._pendingRequest = null;
    this.lastServerError = e.message || e.code || "unknown error";
    this._host.report(
      new RealtimeClientError(ErrorCode.SERVER_ERROR, `The voice service reported an error: ${clause(this.lastServerError)}.`, {
        fatal: false,
        detail: e,
      }),
    );
  }
}
