"""The client's transport contract (web/realtime-transport.js): the voice page works on a
transport other than WebRTC, given through the `transport` option, with nothing else changed.

The transport here is a scripted stand-in (no relay, no network): the test plays the server's
events through it and reads what the client sent. It checks that the call core needs nothing
of a transport but the contract: start, send, setMuted, stats, close, and the events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

pytestmark = pytest.mark.browser

# A transport that keeps everything it is asked in `window.__fake`; `window.__fake.current`
# is the transport of the current call, and its `events` are the client's callbacks.
FAKE_TRANSPORT_JS = """(() => {
  const fake = (window.__fake = {started: [], sent: [], muted: [], closed: [], current: null});
  class ScriptedTransport {
    isSupported() { return true; }
    async start({url, token, stream, options, request, events}) {
      fake.started.push({url, token, tracks: stream.getAudioTracks().length,
                         hasRequest: typeof request === 'function', voice: options.voice});
      this.events = events;
      this.open = true;
      events.onCallId('call_scripted');
      events.onOpen();
    }
    send(event) {
      if (!this.open) return false;
      fake.sent.push(event);
      return true;
    }
    setMuted(muted) { fake.muted.push(muted); }
    async stats() { return {scripted: true}; }
    async close(options) {
      this.open = false;
      fake.closed.push(options || {});
    }
  }
  window.REALTIME_RELAY_CONFIG = {
    voice: 'verse',
    getToken: async () => 'ek_scripted',
    transport: () => (fake.current = new ScriptedTransport()),
  };
  window.__serverSays = (event) => fake.current.events.onEvent(event);
})();"""


async def test_the_page_runs_on_another_transport(
    launch: Any, open_page: Any, static_site: str, silent_wav: Path
) -> None:
    browser = await launch(wav=silent_wav)
    page = await open_page(browser, static_site, init_scripts=(FAKE_TRANSPORT_JS,))
    p = page.page

    # connect(): the microphone and the key go to the transport; session.update goes first.
    await p.get_by_role("button", name="Start call").click()
    await expect(p.locator("#status-text")).to_have_text("Connected")
    fake = await p.evaluate("window.__fake")
    assert fake["started"] == [
        {
            "url": "/v1/realtime/calls",
            "token": "ek_scripted",
            "tracks": 1,
            "hasRequest": True,
            "voice": "verse",
        }
    ]
    first = fake["sent"][0]
    assert first["type"] == "session.update"
    assert first["session"]["audio"]["output"]["voice"] == "verse"
    assert "model" not in first["session"]
    state = await page.state()
    assert state["callId"] == "call_scripted" and state["isRecording"] is True
    assert await p.evaluate("window.realtimeApp.client.peerConnection") is None
    assert await p.evaluate("window.realtimeApp.client.getStats()") == {"scripted": True}

    # The server's events become the speaking indicator, transcripts and the conversation.
    await p.evaluate(
        """() => {
      window.__serverSays({type: 'input_audio_buffer.speech_started', item_id: 'item_1'});
    }"""
    )
    await expect(p.locator("#speaking")).to_have_attribute("data-state", "speaking")
    await p.evaluate(
        """() => {
      const say = window.__serverSays;
      say({type: 'input_audio_buffer.speech_stopped', item_id: 'item_1'});
      const heard = 'conversation.item.input_audio_transcription';
      say({type: `${heard}.delta`, item_id: 'item_1', delta: 'Hello'});
      say({type: `${heard}.completed`, item_id: 'item_1', transcript: 'Hello there'});
      say({type: 'response.created', response: {id: 'resp_1'}});
      say({type: 'response.output_item.added', item: {id: 'item_2', role: 'assistant'}});
      const spoken = 'response.output_audio_transcript.delta';
      say({type: spoken, item_id: 'item_2', delta: 'Hi, '});
      say({type: spoken, item_id: 'item_2', delta: 'how can I help?'});
      say({type: 'response.done', response: {id: 'resp_1', status: 'completed'}});
    }"""
    )
    await expect(p.locator("#user-transcript")).to_have_text("Hello there")
    await expect(p.locator("#agent-transcript")).to_have_text("Hi, how can I help?")
    await expect(p.locator("#messages .message.user")).to_have_text("YouHello there")
    await expect(p.locator("#messages .message.assistant")).to_have_text(
        "AssistantHi, how can I help?"
    )

    # A typed message and its response request go out through the transport; mute too.
    await p.get_by_label("Type a message to the assistant").fill("And tomorrow?")
    await p.get_by_role("button", name="Send").click()
    sent = await p.evaluate("window.__fake.sent.map((e) => e.type)")
    assert sent == ["session.update", "conversation.item.create", "response.create"]
    await p.get_by_role("button", name="Mute").click()
    await expect(p.locator("#speaking-text")).to_have_text("Muted")
    assert await p.evaluate("window.__fake.muted") == [True]

    # The transport reports the end of the call: the client explains it with the server's error.
    await p.evaluate(
        """() => {
      window.__serverSays({type: 'error', error: {message: 'Session expired'}});
      window.__fake.current.events.onEnd('call_ended');
    }"""
    )
    await expect(p.locator("#banner")).to_have_attribute("data-code", "call_ended")
    await expect(p.locator("#banner-message")).to_contain_text("Session expired")
    await expect(p.locator("#status-text")).to_have_text("Not connected")
    assert await p.evaluate("window.__fake.closed") == [{"keepalive": False}]

    # A new call gets a new transport; ending it closes that one.
    await p.get_by_role("button", name="Try again").click()
    await expect(p.locator("#status-text")).to_have_text("Connected")
    await p.get_by_role("button", name="End call").click()
    await expect(p.locator("#status-text")).to_have_text("Call ended")
    fake = await p.evaluate("window.__fake")
    assert len(fake["started"]) == 2
    assert fake["closed"] == [{"keepalive": False}, {"keepalive": False}]
    # Events of a transport that was closed are not the client's business any more.
    await p.evaluate(
        "window.__serverSays({type: 'input_audio_buffer.speech_started', item_id: 'late'})"
    )
    assert (await page.state())["isSpeaking"] is False
    assert page.unexpected_errors() == []
