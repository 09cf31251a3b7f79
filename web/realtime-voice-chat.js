/**
 * realtime-voice-chat.js: the original `RealtimeVoiceChat` React component, on `useWebRTC`.
 *
 *   import { RealtimeVoiceChat } from "realtime-relay-client/realtime-voice-chat.js";
 *   <RealtimeVoiceChat voice="alloy" language="fr" tokenUrl="/api/realtime-token" onError={console.error} />
 *
 * Every prop is passed to `useWebRTC` (so every `RealtimeVoiceClient` option works), plus
 * `className`. No JSX and no build step: it uses `createElement` from the host app's React.
 * Styling hooks: `.rvc`, `.rvc-status`, `.rvc-controls`, `.rvc-transcript`, `.rvc-error`.
 */
import { createElement as h, useState } from "react";

import { useWebRTC } from "./use-webrtc.js";

export function RealtimeVoiceChat(props = {}) {
  const { className, ...options } = props;
  const chat = useWebRTC(options);
  const [draft, setDraft] = useState("");
  const status = chat.isConnected ? "Connected" : chat.isConnecting ? "Connecting…" : "Not connected";

  const onSubmit = (event) => {
    event.preventDefault();
    if (chat.sendMessage(draft)) setDraft("");
  };

  return h(
    "section",
    { className: ["rvc", className].filter(Boolean).join(" "), "aria-label": "Voice chat" },
    h("p", { className: "rvc-status", role: "status" }, status),
    chat.error && errorAlert(chat),
    controls(chat),
    transcripts(chat),
    composer(chat, draft, setDraft, onSubmit),
  );
}

function errorAlert(chat) {
  return h(
    "div",
    { className: "rvc-error", role: "alert", "data-code": chat.error.code },
    chat.error.message,
    chat.audioBlocked && h("button", { type: "button", onClick: chat.enableAudio }, "Enable audio"),
  );
}

function controls(chat) {
  const muted = chat.isConnected && !chat.isRecording;
  return h(
    "div",
    { className: "rvc-controls" },
    chat.isConnected || chat.isConnecting
      ? h("button", { type: "button", className: "rvc-end", onClick: chat.disconnect }, "End call")
      : h("button", { type: "button", className: "rvc-start", onClick: chat.connect }, "Start call"),
    h(
      "button",
      {
        type: "button",
        className: "rvc-mute",
        onClick: chat.toggleRecording,
        disabled: !chat.isConnected,
        "aria-pressed": muted,
      },
      muted ? "Unmute" : "Mute",
    ),
    h("button", { type: "button", className: "rvc-clear", onClick: chat.clearTranscripts }, "Clear"),
  );
}

function transcripts(chat) {
  return h(
    "dl",
    { className: "rvc-transcript" },
    h("dt", null, "You"),
    h("dd", { className: "rvc-user" }, chat.userTranscript),
    h("dt", null, "Assistant"),
    h("dd", { className: "rvc-agent" }, chat.agentTranscript),
  );
}

function composer(chat, draft, setDraft, onSubmit) {
  return h(
    "form",
    { className: "rvc-composer", onSubmit },
    h("label", { htmlFor: "rvc-message" }, "Message"),
    h("input", {
      id: "rvc-message",
      value: draft,
      disabled: !chat.isConnected,
      onChange: (event) => setDraft(event.target.value),
    }),
    h("button", { type: "submit", disabled: !chat.isConnected }, "Send"),
  );
}

export default RealtimeVoiceChat;
