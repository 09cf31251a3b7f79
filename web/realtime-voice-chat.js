/**
 * realtime-voice-chat.js: the original `RealtimeVoiceChat` React component, on `useWebRTC`.
 *
 *   import { RealtimeVoiceChat } from "realtime-relay-client/realtime-voice-chat.js";
 *   <RealtimeVoiceChat voice="alloy" language="fr" tokenUrl="/api/realtime-token" onError={console.error} />
 *
 * Every prop is passed to `useWebRTC` (so every `RealtimeVoiceClient` option works), plus
 * `className` and `history`: false (the default: none, the original component), "browser" (the
 * conversation kept in localStorage, as the demo page does) or "relay" (the signed-in user's
 * recorded conversations, read from the relay with a client secret the app's backend minted with
 * `session.relay.user_id`); with one, earlier turns are listed and "Continue this conversation"
 * starts a call that carries them. No JSX and no build step: it uses `createElement` from the host
 * app's React. Styling hooks: `.rvc`, `.rvc-status`, `.rvc-controls`, `.rvc-transcript`,
 * `.rvc-error`, `.rvc-history`.
 */
import { createElement as h, useEffect, useState } from "react";

import { LocalHistory, RelayHistory, contextItem } from "./history.js";
import { useWebRTC } from "./use-webrtc.js";

export function RealtimeVoiceChat(props = {}) {
  const { className, history: kind = false, ...options } = props;
  const chat = useWebRTC(options);
  const history = useHistory(kind, chat);
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
    controls(chat, history),
    history && earlier(history, chat),
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

function controls(chat, history) {
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
    h("button", { type: "button", className: "rvc-clear", onClick: () => clear(chat, history) }, "Clear"),
  );
}

/** The history the `history` prop asks for (null without one), saved as the conversation goes on. */
function useHistory(kind, chat) {
  const [history] = useState(() =>
    kind === "relay" ? new RelayHistory() : kind === "browser" ? new LocalHistory() : null,
  );
  const [, setLoaded] = useState(false);
  useEffect(() => {
    if (!(history instanceof RelayHistory)) return undefined;
    let live = true;
    history.load(chat.client).then((ok) => live && setLoaded(ok));
    return () => {
      live = false;
    };
  }, [history, chat.client]);
  useEffect(() => {
    history?.merge(chat.messages);
  }, [history, chat.messages]);
  return history;
}

/** Clears the transcripts, and the earlier turns with them (see the history's `clear()`). */
function clear(chat, history) {
  history?.clear();
  chat.clearTranscripts();
}

function earlier(history, chat) {
  if (!history.earlier.length) return null;
  const idle = !chat.isConnected && !chat.isConnecting;
  const resume = async () => {
    const context = contextItem(history.merge(chat.messages));
    if ((await chat.connect()) && context) chat.client.sendEvent(context);
  };
  return h(
    "section",
    { className: "rvc-history", "aria-label": "Earlier conversation" },
    h("h2", null, "Earlier conversation"),
    h(
      "ol",
      null,
      history.earlier.map((m) =>
        h("li", { key: m.id, "data-role": m.role }, `${m.role === "user" ? "You" : "Assistant"}: ${m.text}`),
      ),
    ),
    idle && h("button", { type: "button", className: "rvc-continue", onClick: resume }, "Continue this conversation"),
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
