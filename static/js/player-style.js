// The <canopy-player> shadow DOM's stylesheet: self-contained, so the player
// looks the same on any page that embeds it.

export const PLAYER_CSS = `
:host {
  display: block;
  position: relative;
  aspect-ratio: 16 / 9;
  background: #000;
  color: #e8eaed;
  font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  overflow: hidden;
  contain: content;
  --accent: #3ddc97;
  --live: #ff3b4e;
  --warn: #ffb020;
}
:host([hidden]) { display: none; }
.player { position: absolute; inset: 0; background: #000; user-select: none; -webkit-user-select: none; }
video { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: contain; background: #000; }
button {
  font: inherit; color: inherit; cursor: pointer; border: 0; background: none; padding: 0;
  -webkit-tap-highlight-color: transparent;
}
button:focus-visible { outline: 2px solid var(--accent); outline-offset: 2px; }
svg { width: 20px; height: 20px; fill: currentColor; display: block; }

.overlay {
  position: absolute; inset: 0; display: flex; flex-direction: column; align-items: center;
  justify-content: center; gap: 14px; padding: 24px; text-align: center; color: #c4cad1;
  background: radial-gradient(ellipse at center, rgba(20, 23, 28, 0.55), rgba(0, 0, 0, 0.85));
  transition: opacity 0.3s ease; pointer-events: none;
}
.overlay p { margin: 0; max-width: 30em; text-wrap: balance; }
.overlay .title { font-size: 17px; font-weight: 650; color: #fff; }
.player[data-state="live"] .overlay { opacity: 0; }
.spinner {
  width: 38px; height: 38px; border-radius: 50%;
  border: 3px solid rgba(255, 255, 255, 0.15); border-top-color: var(--accent);
  animation: spin 0.9s linear infinite;
}
.icon-big { display: none; width: 44px; height: 44px; opacity: 0.8; }
.player[data-state="offline"] .spinner, .player[data-state="ended"] .spinner,
.player[data-state="closed"] .spinner, .player[data-state="error"] .spinner,
.player[data-state="idle"] .spinner { display: none; }
.player[data-state="offline"] .icon-big, .player[data-state="ended"] .icon-big,
.player[data-state="error"] .icon-big { display: block; }
.play {
  display: none; pointer-events: auto; width: 72px; height: 72px; border-radius: 50%;
  background: rgba(255, 255, 255, 0.14); backdrop-filter: blur(6px); align-items: center; justify-content: center;
}
.play svg { width: 34px; height: 34px; margin-left: 4px; }
.play:hover { background: rgba(255, 255, 255, 0.24); }
.player[data-state="idle"] .play { display: flex; }
@keyframes spin { to { transform: rotate(360deg); } }

.badge {
  position: absolute; top: 12px; left: 12px; display: inline-flex; align-items: center; gap: 6px;
  padding: 3px 10px; border-radius: 999px; font-size: 12px; font-weight: 700; letter-spacing: 0.06em;
  text-transform: uppercase; background: rgba(0, 0, 0, 0.6); backdrop-filter: blur(6px);
}
.badge::before { content: ""; width: 8px; height: 8px; border-radius: 50%; background: #9aa3ad; }
.player[data-state="live"] .badge { background: var(--live); }
.player[data-state="live"] .badge::before { background: #fff; animation: pulse 1.6s ease-in-out infinite; }
.player[data-state="connecting"] .badge::before, .player[data-state="reconnecting"] .badge::before { background: var(--warn); }
.player[data-state="error"] .badge::before { background: var(--live); }
@keyframes pulse { 50% { opacity: 0.35; } }

.unmute-hint {
  position: absolute; top: 12px; left: 50%; transform: translateX(-50%); display: none;
  align-items: center; gap: 8px; padding: 7px 14px 7px 11px; border-radius: 999px;
  background: rgba(255, 255, 255, 0.92); color: #111; font-weight: 650; font-size: 13px;
  box-shadow: 0 4px 18px rgba(0, 0, 0, 0.35);
}
.unmute-hint svg { width: 18px; height: 18px; }
.player[data-state="live"][data-muted="true"] .unmute-hint { display: inline-flex; }

.panel {
  position: absolute; top: 48px; left: 12px; min-width: 190px; padding: 10px 12px; border-radius: 10px;
  background: rgba(8, 10, 13, 0.78); backdrop-filter: blur(8px); border: 1px solid rgba(255, 255, 255, 0.08);
  font: 12px/1.5 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; color: #d7dce1;
}
.panel[hidden] { display: none; }
.panel dl { display: grid; grid-template-columns: auto 1fr; gap: 2px 14px; margin: 0; }
.panel dt { color: #8b949e; }
.panel dd { margin: 0; text-align: right; font-variant-numeric: tabular-nums; }
.panel dd.relay-on { color: var(--accent); }
.panel dd[data-verification="verified"] { color: var(--accent); }
.panel dd[data-verification="tampered"] { color: #ff6b7a; font-weight: 700; }

.controls {
  position: absolute; left: 0; right: 0; bottom: 0; display: flex; align-items: center; gap: 4px;
  padding: 28px 10px 10px; background: linear-gradient(transparent, rgba(0, 0, 0, 0.7));
  opacity: 0; transition: opacity 0.2s ease;
}
.controls .spacer { flex: 1; }
.controls button {
  display: inline-flex; align-items: center; justify-content: center; width: 40px; height: 40px;
  border-radius: 8px; color: #fff;
}
.controls button:hover { background: rgba(255, 255, 255, 0.14); }
.controls button[aria-pressed="true"] { color: var(--accent); }
.controls .label { font-size: 13px; color: #c4cad1; padding: 0 6px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.player:hover .controls, .player:focus-within .controls, .player:not([data-state="live"]) .controls { opacity: 1; }
:host([controls="0"]) .controls, :host([controls="0"]) .unmute-hint { display: none; }
@media (hover: none) { .controls { opacity: 1; } }
@media (max-width: 480px) {
  .badge { top: 8px; left: 8px; }
  .panel { top: 40px; left: 8px; }
  .controls { padding: 20px 6px 6px; }
  .controls button { width: 44px; height: 44px; }
}
`;
