// The iframe player: /embed/<stream>?muted=1&autoplay=1&controls=1&relay=0
// (&private=1: private mode, through the server's TURN relay only).
// One full-window <canopy-player>; its events are also posted to the parent
// window as {source: 'canopy', event, stream, detail} (and a 'stats' message
// every second), so the embedding page can follow the player without
// reaching into the frame.

import { CanopyPlayer } from './player-element.js';
import { streamFromPath } from './watch-path.js';

/** Events forwarded to the embedding page. */
const FORWARDED = ['live', 'stalled', 'reconnecting', 'offline', 'parentchange', 'statechange'];

function main() {
  const params = new URLSearchParams(location.search);
  const stream = streamFromPath();
  const player = /** @type {CanopyPlayer} */ (document.createElement('canopy-player'));
  for (const name of ['muted', 'autoplay', 'controls', 'relay', 'stats', 'private']) {
    const v = params.get(name);
    if (v !== null) player.setAttribute(name, v === '' ? '1' : v);
  }
  if (stream) player.setAttribute('stream', stream);
  const token = params.get('token'); // a private stream's viewing token
  if (token) player.setAttribute('token', token);
  player.setAttribute('server', location.origin);
  const brand = /** @type {HTMLAnchorElement} */ (document.getElementById('brand'));
  if (stream) brand.href = `/watch/${encodeURIComponent(stream)}`;
  if (params.get('controls') === '0') brand.hidden = true;

  const post = (/** @type {string} */ event, /** @type {unknown} */ detail) => {
    if (window.parent === window) return;
    window.parent.postMessage({ source: 'canopy', event, stream, detail }, '*');
  };
  for (const type of FORWARDED) {
    player.addEventListener(type, (ev) => post(type, /** @type {CustomEvent} */ (ev).detail));
  }
  setInterval(() => { if (player.stats) post('stats', player.stats); }, 1000);

  document.body.append(player);
  /** @type {any} */ (window).canopy = { client: player.client, video: player.video, player };
  player.addEventListener('statechange', () => { /** @type {any} */ (window).canopy.client = player.client; });
  window.addEventListener('pagehide', () => player.stop());
}

main();
