// useWebRTC with the original options plus `language` (the transcription language), and
// RealtimeVoiceChat with the same prop.
import { createElement as h, StrictMode } from "react";
import { createRoot } from "react-dom/client";

import { RealtimeVoiceChat } from "/web/realtime-voice-chat.js";
import { useWebRTC } from "/web/use-webrtc.js";

const record = (window.__hook = { errors: [], api: null });

function HookProbe() {
  const api = useWebRTC({
    model: "gpt-realtime",
    transcriptionModel: "whisper-1",
    voice: "alloy",
    language: "fr",
    onError: (error) => record.errors.push({ code: error.code, message: error.message }),
  });
  record.api = api;
  return h("pre", { id: "hook-state" }, JSON.stringify({ isConnected: api.isConnected }));
}

createRoot(document.getElementById("hook-root")).render(h(StrictMode, null, h(HookProbe)));
createRoot(document.getElementById("component-root")).render(
  h(StrictMode, null, h(RealtimeVoiceChat, { language: "es" })),
);
window.__reactReady = true;
