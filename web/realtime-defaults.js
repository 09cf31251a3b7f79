/**
 * realtime-defaults.js: the defaults of `RealtimeVoiceClient`: its options (each one documented) and
 * its state before any call. realtime-client.js re-exports the DEFAULT_* constants.
 */

export const DEFAULT_MODEL = "gpt-realtime";
export const DEFAULT_TRANSCRIPTION_MODEL = "whisper-1";
export const DEFAULT_VOICE = "alloy";

export const DEFAULT_OPTIONS = Object.freeze({
  model: DEFAULT_MODEL,
  transcriptionModel: DEFAULT_TRANSCRIPTION_MODEL,
  voice: DEFAULT_VOICE,
  /**
   * The language the user speaks (ISO-639-1, e.g. "fr"): `audio.input.transcription.language` of the
   * session the token request asks for (the app's backend decides what it mints; the relay's demo
   * route keeps it), and of the `session.update` at open when this client sets the transcription
   * model itself. Unset: the service detects the language.
   */
  language: undefined,
  /** Optional system instructions for the session. */
  instructions: undefined,
  /** "relay" (browser -> relay -> OpenAI) or "direct" (browser -> OpenAI with a key from the relay). */
  mode: "relay",
  /** Origin (and path prefix) of the relay; "" means the page's own origin. */
  baseUrl: "",
  /** The host app's backend route that returns a relay client secret `{value}`. */
  tokenUrl: "/api/demo/client_secret",
  /** Extra fetch options for the token request (headers, credentials). */
  tokenRequestInit: undefined,
  /** Instead of `tokenUrl`: `async ({session}) => "ek_..."` (or `{value}`). */
  getToken: undefined,
  /** Where the offer goes; defaults to `${baseUrl}/v1/realtime/calls` (direct: `${base_url}/realtime/calls`). */
  callsUrl: undefined,
  /** Direct mode: the route that hands out an OpenAI ephemeral key. */
  directSessionUrl: "/api/realtime/session",
  /** ICE servers for the browser (TURN for locked-down networks). Empty: no STUN, no TURN. */
  iceServers: [],
  /** aiortc has no trickle ICE: the offer waits this long at most for gathering to finish. */
  iceGatheringTimeoutMs: 2000,
  /** Bound on the whole set-up after the answer (ICE + DTLS + data channel open). */
  connectTimeoutMs: 15000,
  /** After the connection fails, how long to keep trying to reconnect to the same call. 0 disables. */
  reconnectTimeoutMs: 15000,
  /** Bound on each HTTP request (token, offer). */
  requestTimeoutMs: 20000,
  /** A finished user turn without any transcription event after this long is reported. 0 disables. */
  transcriptionTimeoutMs: 10000,
  /** Send `session.update` (GA shape) when the data channel opens. */
  sessionUpdateOnOpen: true,
  /** An <audio> element to play the agent on; one is created when absent. */
  audioElement: undefined,
  /** `(options) => RealtimeTransport`, a new one per call (realtime-transport.js); default: WebRTC. */
  transport: undefined,
  onTranscriptDelta: undefined,
  onTranscriptDone: undefined,
  onAgentResponse: undefined,
  onError: undefined,
  /** Every server event, parsed: `(event) => void`. */
  onEvent: undefined,
  /** Every state change: `(state) => void`. */
  onStateChange: undefined,
});

export const INITIAL_STATE = Object.freeze({
  /** "idle" | "connecting" | "connected" | "reconnecting" | "disconnected" | "error" */
  status: "idle",
  isConnecting: false,
  /** The connection failed; the client is reconnecting to the same call (isConnected stays true). */
  isReconnecting: false,
  isConnected: false,
  /** The microphone is captured and not muted. */
  isRecording: false,
  /** The server's VAD hears the user (speech_started .. speech_stopped). */
  isSpeaking: false,
  /** The agent's audio is playing (output_audio_buffer.started .. stopped/cleared). */
  isAgentSpeaking: false,
  /** The latest transcribed user turn: grows with transcription deltas, settled by `completed`. */
  userTranscript: "",
  /** Whether `userTranscript` is settled (its `completed` event arrived). */
  userTranscriptFinal: true,
  /** The latest agent turn: grows with output transcript (or text) deltas. */
  agentTranscript: "",
  /** The conversation so far: `{id, role: "user"|"assistant", text, final, source, interrupted}`. */
  messages: Object.freeze([]),
  /** The last error (a RealtimeClientError), or null. */
  error: null,
  /** The agent's audio could not autoplay: call `enableAudio()` from a click. */
  audioBlocked: false,
  callId: null,
  mode: "relay",
  model: null,
});

/** The flags of a client without a call. */
export const IDLE_FLAGS = Object.freeze({
  isConnecting: false,
  isReconnecting: false,
  isConnected: false,
  isRecording: false,
  isSpeaking: false,
  isAgentSpeaking: false,
});
