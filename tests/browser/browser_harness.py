"""Helpers of the browser tests: Chromium flags, page wrapper, in-page probes.

Real headless Chromium (Debian's ``chromium``) driven by Playwright's Python API.

The flags follow the project's browser-testing notes: fake media devices fed from a WAV
file, loopback ICE candidates allowed, no background network, no mDNS responder.
Every browser test is skipped (with the reason) only when ``chromium`` is not installed;
``make test`` installs it.
"""

from __future__ import annotations

import json
import shutil
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
WEB_DIR = REPO / "web"
VENDOR_DIR = Path(__file__).resolve().parent / "vendor"
SCREENSHOTS = REPO / "artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium")

# Playwright 1.65's own --disable-features list (passing the switch replaces it), plus the
# mDNS responder, which would otherwise join a multicast group on the NIC.
_PLAYWRIGHT_DISABLED_FEATURES = (
    "AvoidUnnecessaryBeforeUnloadCheckSync,DestroyProfileOnBrowserClose,HttpsUpgrades,"
    "HttpsFirstBalancedModeAutoEnable,LensOverlay,MediaRouter,PaintHolding,"
    "ThirdPartyStoragePartitioning,AvoidCorsURLLoaderRestartOnRedirect,TcpPortRandomizationWin,"
    "OptimizationHints,NetworkTimeServiceQuerying,AimEnabled,PreconnectToSearch"
)
BASE_ARGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-loopback-in-peer-connection",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    f"--disable-features={_PLAYWRIGHT_DISABLED_FEATURES},WebRtcHideLocalIpsWithMdns",
]

PHONE_VIEWPORT = {"width": 390, "height": 844}
DESKTOP_VIEWPORT = {"width": 1200, "height": 900}


def write_wav(path: Path, samples: np.ndarray, rate: int = 48000) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype(np.int16).tobytes())
    return path


@dataclass
class PageUnderTest:
    """A page plus what it printed: console errors and uncaught exceptions."""

    page: Any
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    http_errors: list[str] = field(default_factory=list)

    async def state(self) -> dict[str, Any]:
        """The client's state, as JSON (the error reduced to code, status, message)."""
        return await self.page.evaluate(STATE_JS)  # type: ignore[no-any-return]

    async def wait_state(self, predicate_js: str, timeout_s: float = 15.0) -> dict[str, Any]:
        """Wait until ``predicate_js`` (a JS expression over ``s``, the state) holds."""
        try:
            await self.page.wait_for_function(
                "() => { const s = window.realtimeApp && window.realtimeApp.client.state;"
                f" return !!s && ({predicate_js}); }}",
                timeout=timeout_s * 1000,
                polling=100,
            )
        except Exception as exc:
            state = await self.state()
            raise AssertionError(
                f"state never matched `{predicate_js}` in {timeout_s}s: {json.dumps(state)[:2000]}"
            ) from exc
        return await self.state()

    async def audio_stats(self) -> dict[str, Any] | None:
        return await self.page.evaluate(AUDIO_STATS_JS)  # type: ignore[no-any-return]

    def unexpected_errors(self, allowed: tuple[str, ...] = ()) -> list[str]:
        errors = self.console_errors + self.page_errors
        unexpected = [e for e in errors if not any(a in e for a in allowed)]
        # Chrome's console line does not say which request failed: add the responses.
        return unexpected + self.http_errors if unexpected else []


STATE_JS = """() => {
  const s = window.realtimeApp.client.state;
  const e = s.error;
  return {...s, error: e && {code: e.code, status: e.status, message: e.message, fatal: e.fatal}};
}"""

AUDIO_STATS_JS = """async () => {
  const pc = window.realtimeApp.client.peerConnection;
  if (!pc) return null;
  const out = {inbound: null, outbound: null, pair: null};
  const stats = await pc.getStats();
  let pairId = null;
  stats.forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'audio') out.inbound = {
      bytesReceived: r.bytesReceived, packetsReceived: r.packetsReceived,
      totalSamplesReceived: r.totalSamplesReceived, audioLevel: r.audioLevel,
      totalAudioEnergy: r.totalAudioEnergy, codecId: r.codecId};
    if (r.type === 'outbound-rtp' && r.kind === 'audio') out.outbound = {
      bytesSent: r.bytesSent, packetsSent: r.packetsSent};
    if (r.type === 'transport' && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId;
  });
  if (pairId) {
    const pair = stats.get(pairId);
    const local = pair && stats.get(pair.localCandidateId);
    const remote = pair && stats.get(pair.remoteCandidateId);
    out.pair = {local: local && local.address, remote: remote && remote.address};
  }
  if (out.inbound && out.inbound.codecId) {
    const codec = stats.get(out.inbound.codecId);
    out.inbound.codec = codec && codec.mimeType;
  }
  return out;
}"""

# Records the constraints of every getUserMedia call, before the page's own code runs.
RECORD_GUM_JS = """(() => {
  window.__gumCalls = [];
  const md = navigator.mediaDevices;
  if (!md || !md.getUserMedia) return;
  const original = md.getUserMedia.bind(md);
  md.getUserMedia = (constraints) => {
    window.__gumCalls.push(JSON.parse(JSON.stringify(constraints)));
    return original(constraints);
  };
})();"""

# Samples the level of the agent's audio as the page plays it (AnalyserNode on the
# remote stream that is attached to the <audio> element) and of the microphone.
LEVEL_SAMPLER_JS = """(() => {
  window.__levels = {maxOut: 0, outSamples: 0, loudOut: 0, maxMic: 0};
  setInterval(() => {
    const c = window.realtimeApp && window.realtimeApp.client;
    if (!c || !c.isConnected) return;
    const out = c.getOutputLevel(), mic = c.getMicLevel();
    const l = window.__levels;
    l.outSamples++;
    if (out > 0.01) l.loudOut++;
    l.maxOut = Math.max(l.maxOut, out);
    l.maxMic = Math.max(l.maxMic, mic);
  }, 50);
})();"""


async def screenshot(page: Any, name: str, *, full_page: bool = False) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    await page.screenshot(path=str(path), full_page=full_page)
    return path


async def wait_until(
    predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.1
) -> Any:
    """Poll a (sync or async) predicate until it returns a truthy value."""
    import asyncio
    import inspect

    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)
