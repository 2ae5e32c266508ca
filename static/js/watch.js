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
    box.disabled = player.private;
    if (player.private) {
      box.checked = false;
      status.textContent = 'Off: private mode never relays';
    } else if (!box.checked) {
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

/** Where the viewer's private-mode choice is kept between visits. */
const PRIVATE_STORAGE_KEY = 'canopy.private';

/** Private mode at start: ?private=1 or 0, else the remembered choice. @param {URLSearchParams} params */
function initialPrivate(params) {
  const p = params.get('private');
  if (p !== null) return p === '1' || p === '';
  try {
    return localStorage.getItem(PRIVATE_STORAGE_KEY) === '1';
  } catch {
    return false;
  }
}

/**
 * The private-mode switch. Turning it on or off starts the connection over
 * (every connection's ICE policy changes); a server whose -privacy covers
 * the stream holds it on.
 * @param {CanopyPlayer} player @param {() => void} renderRelay
 */
function setupPrivateSwitch(player, renderRelay) {
  const box = /** @type {HTMLInputElement} */ ($('privacy'));
  const status = $('privacy-status');
  const render = () => {
    const forced = !!player.client?.private && player.getAttribute('private') !== '1';
    box.checked = player.private;
    box.disabled = forced;
    status.textContent = forced ? 'On: this server keeps viewers private'
      : player.private ? 'On: you connect through the server\'s relay' : 'Off: your parent sees your address';
    renderRelay();
  };
  box.addEventListener('change', () => {
    try {
      localStorage.setItem(PRIVATE_STORAGE_KEY, box.checked ? '1' : '0');
    } catch {
      // storage blocked: the choice lasts for this page only
    }
    if (box.checked) player.setAttribute('private', '1');
    else player.removeAttribute('private');
    render();
  });
  render();
  player.addEventListener('statechange', render);
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
  if (initialPrivate(params)) player.setAttribute('private', '1');
  const renderRelay = setupRelaySwitch(player);
  const renderPrivate = setupPrivateSwitch(player, renderRelay);
  $('stage').append(player);
  player.focus({ preventScroll: true });

  /** The client whose events the switches follow (a new one after a private-mode change). @type {any} */
  let followed = null;
  const expose = () => {
    /** @type {any} */ (window).canopy = { client: player.client, video: player.video, player };
    if (player.client && player.client !== followed) {
      followed = player.client;
      followed.addEventListener('stats', renderRelay);
      followed.addEventListener('children', renderRelay);
      followed.addEventListener('welcome', renderPrivate);
    }
  };
  expose();
  player.addEventListener('statechange', expose);
  $('privacy').addEventListener('change', expose);

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
