/**
 * levels.js: the demo page's voice-activity view: the caller's microphone and the agent's voice as
 * level meters (`role="meter"`, from the client's AnalyserNodes), each "active" above -40 dBFS.
 */

/** A meter's update function: RMS (0..1) -> the bar on a -60..0 dBFS scale, `aria-valuenow`, `data-active`. */
export function meter(box, fill) {
  let lastAria = -1;
  return (rms) => {
    const db = rms > 0 ? 20 * Math.log10(rms) : -100;
    const level = Math.max(0, Math.min(1, (db + 60) / 60));
    fill.style.transform = `scaleX(${level.toFixed(3)})`;
    box.dataset.level = level.toFixed(3);
    box.dataset.active = String(db > -40);
    const aria = Math.round(level * 100);
    if (aria !== lastAria && (aria === 0 || Math.abs(aria - lastAria) >= 5)) {
      box.setAttribute("aria-valuenow", String(aria));
      lastAria = aria;
    }
  };
}

/** Updates both meters every frame while `client` has a call (and zeroes them after). */
export function showLevels(client, showMic, showAgent) {
  let frame = 0;
  const loop = () => {
    frame = 0;
    if (!client.isConnected) {
      showMic(0);
      showAgent(0);
      return;
    }
    showMic(client.getMicLevel());
    showAgent(client.getOutputLevel());
    frame = requestAnimationFrame(loop);
  };
  client.subscribe((state) => {
    if (state.isConnected && !frame) frame = requestAnimationFrame(loop);
  });
}
