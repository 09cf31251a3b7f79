/** Types of realtime-client.js (the module itself is plain JavaScript, no build step). */

export declare const DEFAULT_MODEL: "gpt-realtime";
export declare const DEFAULT_TRANSCRIPTION_MODEL: "whisper-1";
export declare const DEFAULT_VOICE: "alloy";
export declare const MIC_CONSTRAINTS: Readonly<{
  echoCancellation: true;
  noiseSuppression: true;
  autoGainControl: true;
  sampleRate: 24000;
  channelCount: 1;
}>;

export type ErrorCodeValue =
  | "insecure_origin" | "unsupported_browser" | "mic_permission_denied" | "no_mic" | "mic_busy"
  | "relay_unreachable" | "token_failed" | "unauthorized" | "upstream_unreachable" | "upstream_timeout"
  | "relay_busy" | "rate_limited" | "direct_mode_disabled" | "relay_error" | "connection_failed"
  | "connection_lost" | "call_ended" | "autoplay_blocked" | "transcription_missing"
  | "transcription_failed" | "server_error" | "not_connected";

export declare const ErrorCode: Readonly<Record<string, ErrorCodeValue>>;

export declare class RealtimeClientError extends Error {
  readonly code: ErrorCodeValue;
  /** HTTP status of the failed request, or null. */
  readonly status: number | null;
  /** The server's error object (OpenAI's envelope `error`), or null. */
  readonly detail: Record<string, unknown> | null;
  /** False when the call goes on (autoplay blocked, missing transcription, an `error` event). */
  readonly fatal: boolean;
}

/** A server event from the `oai-events` data channel (OpenAI Realtime API). */
export type RealtimeServerEvent = { type: string; [key: string]: unknown };

export interface RealtimeClientOptions {
  /** Default "gpt-realtime". */
  model?: string;
  /** Default "whisper-1"; null disables transcription of the user's speech. */
  transcriptionModel?: string | null;
  /** Default "alloy". */
  voice?: string;
  /** The transcription language (ISO-639-1, e.g. "fr"): `audio.input.transcription.language`. */
  language?: string;
  instructions?: string;
  /** "relay" (default) or "direct" (browser -> OpenAI with a key from `directSessionUrl`). */
  mode?: "relay" | "direct";
  /** Origin (and path prefix) of the relay; "" (default) is the page's origin. */
  baseUrl?: string;
  /** The host app's backend route returning a relay client secret `{value}`. Default "/api/demo/client_secret". */
  tokenUrl?: string;
  /** Extra fetch options (headers, credentials) for the token / direct-session request. */
  tokenRequestInit?: RequestInit;
  /** Instead of tokenUrl: returns the client secret. */
  getToken?: (request: { session: Record<string, unknown> }) => Promise<string | { value: string }>;
  callsUrl?: string;
  directSessionUrl?: string;
  iceServers?: RTCIceServer[];
  iceGatheringTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** After the connection fails, how long to keep reconnecting to the same call (default 15000; 0: never). */
  reconnectTimeoutMs?: number;
  requestTimeoutMs?: number;
  transcriptionTimeoutMs?: number;
  sessionUpdateOnOpen?: boolean;
  audioElement?: HTMLAudioElement;
  /**
   * What carries each call. "auto" (default): WebRTC, then a WebSocket if WebRTC has not connected
   * `webrtcTimeoutMs` after the relay's answer; "webrtc" or "websocket" forces one; or a factory
   * called on each `connect()`.
   */
  transport?: "auto" | "webrtc" | "websocket" | ((options: RealtimeClientOptions) => RealtimeTransport);
  /** Auto mode: how long WebRTC may take to connect before the WebSocket is tried (5000). */
  webrtcTimeoutMs?: number;
  /** The WebSocket's URL; default: the calls URL with `/ws` for `/calls` (`wss:` for `https:`). */
  websocketUrl?: string;
  /** A piece of the user's transcript (conversation.item.input_audio_transcription.delta). */
  onTranscriptDelta?: (delta: string, event: RealtimeServerEvent) => void;
  /** The user's settled transcript of a turn (…input_audio_transcription.completed). */
  onTranscriptDone?: (transcript: string, event: RealtimeServerEvent) => void;
  /** The agent finished a response (response.done): its transcript (or text) and the response object. */
  onAgentResponse?: (text: string, response: Record<string, unknown>) => void;
  onError?: (error: RealtimeClientError) => void;
  onEvent?: (event: RealtimeServerEvent) => void;
  onStateChange?: (state: RealtimeClientState) => void;
}

/** What a transport reports to the client (realtime-transport.js). None is called after `close()`. */
export interface TransportEvents {
  /** Events can flow; the client sends `session.update` here, before anything queued goes out. */
  onOpen(): void;
  /** A server event, parsed. */
  onEvent(event: RealtimeServerEvent): void;
  /** The agent's audio, for the client to play. */
  onRemoteAudio(stream: MediaStream): void;
  /** The server named the call. */
  onCallId(callId: string): void;
  /** After `start()` resolved, the call ended without `close()`: "call_ended" or "connection_lost". */
  onEnd(code: ErrorCodeValue): void;
  /** The connection failed; the transport is attaching a new one to the same call. */
  onReconnecting?(): void;
  /** The call is carried again (after `onReconnecting`). */
  onReconnected?(): void;
}

export interface TransportStartOptions {
  /** The endpoint: the relay's `/v1/realtime/calls`, or OpenAI's in direct mode. */
  url: string;
  /** The client secret. */
  token: string;
  /** The microphone, captured with MIC_CONSTRAINTS (the client stops it). */
  stream: MediaStream;
  options: RealtimeClientOptions;
  /** `fetch` bounded by requestTimeoutMs and cancelled by `disconnect()`. */
  request(url: string, init: RequestInit, what: "offer" | string): Promise<Response>;
  events: TransportEvents;
}

/** What carries one call (see realtime-transport.js): WebRTC by default, or e.g. a WebSocket. */
export interface RealtimeTransport {
  isSupported(): boolean;
  /** Resolves once events flow both ways; rejects with a RealtimeClientError. */
  start(options: TransportStartOptions): Promise<void>;
  /** Sends a client event (queued until open); false when it cannot. */
  send(event: Record<string, unknown>): boolean;
  setMuted(muted: boolean): void;
  stats(): Promise<RTCStatsReport | Record<string, unknown> | null>;
  /** Hangs up and releases the connection; `keepalive` when the page goes away. */
  close(options?: { keepalive?: boolean }): Promise<void>;
  readonly peerConnection?: RTCPeerConnection | null;
}

export declare class WebRTCTransport implements RealtimeTransport {
  readonly peerConnection: RTCPeerConnection | null;
  isSupported(): boolean;
  start(options: TransportStartOptions): Promise<void>;
  send(event: Record<string, unknown>): boolean;
  setMuted(muted: boolean): void;
  stats(): Promise<RTCStatsReport | null>;
  close(options?: { keepalive?: boolean }): Promise<void>;
}

/** A call over one WebSocket (`/v1/realtime/ws`): PCM16 24 kHz frames both ways, events as text. */
export declare class WebSocketTransport implements RealtimeTransport {
  readonly peerConnection: null;
  readonly kind: "websocket";
  isSupported(): boolean;
  start(options: TransportStartOptions): Promise<void>;
  send(event: Record<string, unknown>): boolean;
  setMuted(muted: boolean): void;
  stats(): Promise<Record<string, unknown> | null>;
  close(options?: { keepalive?: boolean }): Promise<void>;
}

/** What carries a call, as the page names it (the relay's snapshot: udp, tcp, turn-*, websocket). */
export type TransportKind = "webrtc-udp" | "webrtc-tcp" | "websocket";

export interface ConversationMessage {
  readonly id: string;
  readonly role: "user" | "assistant";
  readonly text: string;
  readonly final: boolean;
  readonly source?: "voice" | "text";
  readonly interrupted: boolean;
  readonly failed?: boolean;
}

export interface RealtimeClientState {
  readonly status: "idle" | "connecting" | "connected" | "reconnecting" | "disconnected" | "error";
  readonly isConnecting: boolean;
  /** The connection failed; the client is reconnecting to the same call (`isConnected` stays true). */
  readonly isReconnecting: boolean;
  readonly isConnected: boolean;
  readonly isRecording: boolean;
  readonly isSpeaking: boolean;
  readonly isAgentSpeaking: boolean;
  readonly userTranscript: string;
  readonly agentTranscript: string;
  readonly messages: readonly ConversationMessage[];
  readonly error: RealtimeClientError | null;
  readonly audioBlocked: boolean;
  readonly callId: string | null;
  /** What carries the call (null before it is up). */
  readonly transport?: TransportKind | null;
  readonly mode: "relay" | "direct";
  readonly model: string | null;
}

export declare class RealtimeVoiceClient extends EventTarget {
  constructor(options?: RealtimeClientOptions);
  options: RealtimeClientOptions;
  readonly state: RealtimeClientState;
  readonly isConnected: boolean;
  readonly isConnecting: boolean;
  readonly isReconnecting: boolean;
  readonly isRecording: boolean;
  readonly isSpeaking: boolean;
  readonly userTranscript: string;
  readonly agentTranscript: string;
  readonly messages: readonly ConversationMessage[];
  readonly error: RealtimeClientError | null;
  readonly status: RealtimeClientState["status"];
  readonly callId: string | null;
  readonly peerConnection: RTCPeerConnection | null;
  readonly audioElement: HTMLAudioElement | null;
  setOptions(options: RealtimeClientOptions): void;
  subscribe(listener: (state: RealtimeClientState) => void): () => void;
  getState(): RealtimeClientState;
  /** Resolves true once the call is up, false if it failed (see state.error / onError). */
  connect(): Promise<boolean>;
  disconnect(): Promise<void>;
  sendMessage(text: string): boolean;
  sendEvent(event: Record<string, unknown>): boolean;
  toggleRecording(): boolean;
  clearTranscripts(): void;
  clearError(): void;
  enableAudio(): Promise<boolean>;
  getMicLevel(): number;
  getOutputLevel(): number;
  /** The transport's statistics (an RTCStatsReport with WebRTC), or null without a call. */
  getStats(): Promise<RTCStatsReport | Record<string, unknown> | null>;
}

export declare function createRealtimeClient(options?: RealtimeClientOptions): RealtimeVoiceClient;
export default RealtimeVoiceClient;
