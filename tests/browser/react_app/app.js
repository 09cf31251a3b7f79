// A React app that uses the relay's client exactly as the original product did.
import { createElement as h, StrictMode } from "react";
import { createRoot } from "react-dom/client";

import { RealtimeVoiceChat } from "/web/realtime-voice-chat.js";
import { useWebRTC } from "/web/use-webrtc.js";

const record = (window.__hook = { deltas: [], dones: [], responses: [], errors: [], renders: 0, api: null });

function HookProbe() {
  // The original signature: one options object, the original option names.
  const api = useWebRTC({
    model: "gpt-realtime",
    transcriptionModel: "whisper-1",
    voice: "alloy",
    onTranscriptDelta: (delta) => record.deltas.push(delta),
    onTranscriptDone: (transcript) => record.dones.push(transcript),
    onAgentResponse: (text) => record.responses.push(text),
    onError: (error) => record.errors.push({ code: error.code, message: error.message }),
  });
  record.api = api;
  record.renders += 1;
  const { isConnected, isRecording, userTranscript, agentTranscript } = api;
  return h("pre", { id: "hook-state" }, JSON.stringify({ isConnected, isRecording, userTranscript, agentTranscript }));
}

createRoot(document.getElementById("hook-root")).render(h(StrictMode, null, h(HookProbe)));
createRoot(document.getElementById("component-root")).render(
  h(StrictMode, null, h(RealtimeVoiceChat, { voice: "verse", className: "in-test" })),
);
window.__reactReady = true;
