/**
 * use-webrtc.js: the original `useWebRTC` React hook, on top of realtime-client.js.
 *
 *   const { isConnected, isRecording, userTranscript, agentTranscript,
 *           connect, disconnect, sendMessage, toggleRecording, clearTranscripts } = useWebRTC({
 *     model, transcriptionModel, voice,
 *     onTranscriptDelta, onTranscriptDone, onAgentResponse, onError,
 *     language, // an addition: the transcription language (ISO-639-1, e.g. "fr")
 *   });
 *
 * React is a peer dependency: this module imports "react" and the host app provides it (its bundler,
 * or an import map in the page). Nothing of React is bundled here. Every other option of
 * `RealtimeVoiceClient` (tokenUrl, baseUrl, mode: "direct", iceServers, ...) is accepted too, and the
 * hook also returns the extra state (status, error, messages, isSpeaking, ...) and the client itself.
 */
import { useCallback, useEffect, useRef, useState } from "react";

import { RealtimeVoiceClient } from "./realtime-client.js";

const CALLBACKS = ["onTranscriptDelta", "onTranscriptDone", "onAgentResponse", "onError", "onEvent", "onStateChange"];

export function useWebRTC(options = {}) {
  const optionsRef = useRef(options);
  optionsRef.current = options;
  const clientRef = useRef(null);

  if (clientRef.current === null) {
    // Callbacks go through the ref, so the latest ones are called without re-creating the client.
    const forwarded = {};
    for (const name of CALLBACKS) forwarded[name] = (...args) => optionsRef.current[name]?.(...args);
    clientRef.current = new RealtimeVoiceClient({ ...withoutCallbacks(options), ...forwarded });
  }
  const client = clientRef.current;
  const [state, setState] = useState(client.state);

  useEffect(() => {
    setState(client.state);
    const unsubscribe = client.subscribe(setState);
    return () => {
      unsubscribe();
      client.disconnect();
    };
  }, [client]);

  const connect = useCallback(() => {
    client.setOptions(withoutCallbacks(optionsRef.current));
    return client.connect();
  }, [client]);
  const disconnect = useCallback(() => client.disconnect(), [client]);
  const sendMessage = useCallback((text) => client.sendMessage(text), [client]);
  const toggleRecording = useCallback(() => client.toggleRecording(), [client]);
  const clearTranscripts = useCallback(() => client.clearTranscripts(), [client]);
  const enableAudio = useCallback(() => client.enableAudio(), [client]);

  return {
    isConnected: state.isConnected,
    isRecording: state.isRecording,
    userTranscript: state.userTranscript,
    agentTranscript: state.agentTranscript,
    connect,
    disconnect,
    sendMessage,
    toggleRecording,
    clearTranscripts,
    // Beyond the original API:
    isConnecting: state.isConnecting,
    // "reconnecting" in `status` too; `isConnected` stays true meanwhile.
    isReconnecting: state.isReconnecting,
    isSpeaking: state.isSpeaking,
    isAgentSpeaking: state.isAgentSpeaking,
    status: state.status,
    error: state.error,
    messages: state.messages,
    audioBlocked: state.audioBlocked,
    enableAudio,
    client,
  };
}

function withoutCallbacks(options) {
  const rest = {};
  for (const [key, value] of Object.entries(options || {})) {
    if (!CALLBACKS.includes(key)) rest[key] = value;
  }
  return rest;
}

export default useWebRTC;
