import type {
  ConversationMessage,
  RealtimeClientError,
  RealtimeClientOptions,
  RealtimeClientState,
  RealtimeVoiceClient,
} from "./realtime-client";

/** Every `RealtimeVoiceClient` option, the original ones and `language` (the transcription language) included. */
export type UseWebRTCOptions = RealtimeClientOptions;

export interface UseWebRTCReturn {
  isConnected: boolean;
  isRecording: boolean;
  userTranscript: string;
  agentTranscript: string;
  connect: () => Promise<boolean>;
  disconnect: () => Promise<void>;
  sendMessage: (text: string) => boolean;
  toggleRecording: () => boolean;
  clearTranscripts: () => void;
  // Beyond the original API:
  isConnecting: boolean;
  /** The connection failed and the client is reconnecting to the same call. */
  isReconnecting: boolean;
  isSpeaking: boolean;
  isAgentSpeaking: boolean;
  status: RealtimeClientState["status"];
  error: RealtimeClientError | null;
  messages: readonly ConversationMessage[];
  audioBlocked: boolean;
  enableAudio: () => Promise<boolean>;
  client: RealtimeVoiceClient;
}

export declare function useWebRTC(options?: UseWebRTCOptions): UseWebRTCReturn;
export default useWebRTC;
