// RealtimeVoiceChat with `history: "relay"`: the app's token route mints for the signed-in
// user "u1" (here the open relay's demo route, with `session.relay.user_id`).
import { createElement as h, StrictMode } from "react";
import { createRoot } from "react-dom/client";

import { RealtimeVoiceChat } from "/web/realtime-voice-chat.js";

const record = (window.__chat = { messages: [], errors: [] });

async function getToken({ session }) {
  const response = await fetch("/api/demo/client_secret", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ session: { ...session, relay: { user_id: "u1" } } }),
  });
  return (await response.json()).value;
}

createRoot(document.getElementById("component-root")).render(
  h(
    StrictMode,
    null,
    h(RealtimeVoiceChat, {
      history: "relay",
      getToken,
      onStateChange: (state) => (record.messages = state.messages),
      onError: (error) => record.errors.push({ code: error.code, message: error.message }),
    }),
  ),
);
window.__reactReady = true;
