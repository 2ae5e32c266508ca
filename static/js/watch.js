// The watch page: /watch/<stream>. A large <canopy-player> with the page's
// own settings (the relay switch, the viewer count), and window.canopy =
// { client, video, player } for automated browser tests.

import { CanopyPlayer, rememberRelayChoice } from './player-element.js';
import { streamFromPath } from './watch-path.js';
import { browserRelayCapacity } from './relaypolicy.js';
import { formatBitrate, relayLabel } from './format.js';

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

/** Keeps the viewer count under the title fresh. @param {string} stream @param {CanopyPlayer} player */
function pollViewers(stream, player) {
  const sub = $('sub');
  const refresh = async () => {
    if (document.hidden) return;
    try {
      const res = await fetch('/api/streams', { cache: 'no-store' });
      if (!res.ok) return;
      const list = await res.json();
      const s = Array.isArray(list) ? list.find((x) => x && x.id === stream) : null;
      sub.textContent = s && s.live ? `${Math.max(1, Number(s.viewers) || 0)} watching now` : 'not live';
    } catch {
      // the player shows connection trouble; the count just stays as it was
    }
  };
  refresh();
  setInterval(refresh, 5000);
  player.addEventListener('statechange', refresh);
}

/** Fills the embed snippets and their copy buttons. @param {string} stream */
function setupShare(stream) {
  const origin = location.origin;
  const name = encodeURIComponent(stream);
  $('embed-iframe').textContent =
    `<iframe src="${origin}/embed/${name}?muted=1&autoplay=1&controls=1" width="640" height="360" allow="autoplay; fullscreen" allowfullscreen style="border:0"></iframe>`;
  $('embed-component').textContent =
    `<script type="module" src="${origin}/embed.js"></script> <canopy-player stream="${stream}" server="${origin}"></canopy-player>`;
  for (const btn of document.querySelectorAll('button.copy')) {
    const b = /** @type {HTMLButtonElement} */ (btn);
    b.addEventListener('click', async () => {
      const text = $(b.dataset.copy ?? '').textContent ?? '';
      try {
        await navigator.clipboard.writeText(text);
        b.textContent = 'Copied';
      } catch {
        b.textContent = 'Select & copy';
      }
      setTimeout(() => { b.textContent = 'Copy'; }, 1500);
    });
  }
}

/** @param {CanopyPlayer} player */
function setupRelaySwitch(player) {
  const box = /** @type {HTMLInputElement} */ ($('relay'));
  const status = $('relay-status');
  const initial = browserRelayCapacity() > 0;
  box.checked = initial;
  player.setAttribute('relay', initial ? '1' : '0');
  box.addEventListener('change', () => {
    rememberRelayChoice(box.checked);
    player.setAttribute('relay', box.checked ? '1' : '0');
    render();
  });
  const render = () => {
    const c = player.client;
    const n = c ? [...c.children.values()].filter((x) => x.connected).length : 0;
    const snap = player.stats;
    if (!box.checked) {
      status.textContent = 'Off: you only watch';
    } else if (n > 0) {
      const rate = snap && snap.relayBitrateKbps > 0 ? ` · ${formatBitrate(snap.relayBitrateKbps)} up` : '';
      status.textContent = `Relaying to ${relayLabel(n, 2)}${rate}`;
    } else {
      status.textContent = 'Ready to relay to up to 2 viewers';
    }
  };
  render();
  player.addEventListener('statechange', render);
  // Animate the switch only for the viewer's own changes, not the first paint.
  requestAnimationFrame(() => requestAnimationFrame(() => { /** @type {HTMLElement} */ (box.parentElement).dataset.ready = ''; }));
  return render;
}

function main() {
  const stream = streamFromPath();
  const player = /** @type {CanopyPlayer} */ (document.createElement('canopy-player'));
  player.id = 'player';
  const params = new URLSearchParams(location.search);
  if (params.get('stats') === '1') player.setAttribute('stats', '1');
  if (params.get('passthrough') === '0') player.setAttribute('passthrough', '0');
  if (!stream) {
    $('stream-name').textContent = 'Invalid stream name';
    $('stage').append(player); // shows the error state
    /** @type {any} */ (window).canopy = { client: null, video: player.video, player };
    return;
  }
  document.title = `${stream} · Canopy`;
  $('stream-name').textContent = stream;
  $('title').textContent = stream;
  player.setAttribute('stream', stream);
  player.setAttribute('server', location.origin);
  const token = params.get('token'); // a private stream's viewing token
  if (token) player.setAttribute('token', token);
  const renderRelay = setupRelaySwitch(player);
  $('stage').append(player);
  player.focus({ preventScroll: true });

  const expose = () => { /** @type {any} */ (window).canopy = { client: player.client, video: player.video, player }; };
  expose();
  player.addEventListener('statechange', expose);
  player.client?.addEventListener('stats', renderRelay);
  player.client?.addEventListener('children', renderRelay);

  window.addEventListener('pagehide', () => player.stop()); // sends leave
  window.addEventListener('pageshow', (ev) => { if (ev.persisted) location.reload(); });
  document.addEventListener('keydown', (ev) => {
    if (ev.target === document.body && ['m', 'f', 'i'].includes(ev.key)) {
      player.dispatchEvent(new KeyboardEvent('keydown', { key: ev.key }));
    }
  });
  pollViewers(stream, player);
  setupShare(stream);
}

main();
