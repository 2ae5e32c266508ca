// The watch page: /watch/<stream>. Plays one stream through a CanopyClient
// and exposes window.canopy = { client, video } for automated browser tests.

import { CanopyClient } from './client.js';
import { validID } from './protocol.js';

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const video = /** @type {HTMLVideoElement} */ ($('video'));
const player = $('player');
const badge = $('badge');
const overlayText = $('overlay-text');
const unmuteBtn = /** @type {HTMLButtonElement} */ ($('unmute'));
const fullscreenBtn = /** @type {HTMLButtonElement} */ ($('fullscreen'));
const statsLine = $('stats');

/** Badge label and overlay text for each state. */
const LABELS = {
  connecting: ['connecting', 'Connecting…'],
  live: ['live', ''],
  reconnecting: ['reconnecting', 'Reconnecting…'],
  offline: ['offline', 'The broadcast is offline. It will resume here when it comes back.'],
  closed: ['closed', 'Stopped.'],
  error: ['error', 'Something went wrong.'],
};

/**
 * @param {keyof typeof LABELS} state
 * @param {string} [reason]
 */
function show(state, reason) {
  const [label, text] = LABELS[state];
  player.dataset.state = state;
  badge.textContent = state === 'offline' && reason === 'stream not found' ? 'not found' : label;
  overlayText.textContent = reason && state !== 'live'
    ? reason.charAt(0).toUpperCase() + reason.slice(1) + (state === 'offline' ? '.' : '…')
    : text;
}

/** @returns {string|null} the stream name of /watch/<stream>, or null when invalid */
function streamFromPath() {
  const last = location.pathname.replace(/\/+$/, '').split('/').pop() ?? '';
  try {
    const name = decodeURIComponent(last);
    return validID(name) ? name : null;
  } catch {
    return null;
  }
}

function setupControls() {
  const syncMute = () => {
    unmuteBtn.textContent = video.muted ? 'Unmute' : 'Mute';
    unmuteBtn.setAttribute('aria-pressed', String(!video.muted));
  };
  unmuteBtn.addEventListener('click', () => {
    video.muted = !video.muted;
    if (!video.muted) video.play().catch(() => {});
    syncMute();
  });
  video.addEventListener('volumechange', syncMute);

  const v = /** @type {any} */ (video);
  const canFullscreen = document.fullscreenEnabled || typeof v.webkitEnterFullscreen === 'function';
  if (!canFullscreen) fullscreenBtn.hidden = true;
  fullscreenBtn.addEventListener('click', () => {
    if (document.fullscreenElement) {
      document.exitFullscreen().catch(() => {});
    } else if (player.requestFullscreen) {
      player.requestFullscreen().catch(() => {});
    } else if (typeof v.webkitEnterFullscreen === 'function') {
      v.webkitEnterFullscreen(); // iOS Safari: only the video element can go fullscreen
    }
  });
  document.addEventListener('fullscreenchange', () => {
    fullscreenBtn.textContent = document.fullscreenElement ? 'Exit fullscreen' : 'Fullscreen';
  });
  player.addEventListener('dblclick', () => fullscreenBtn.click());
}

/** @param {number} bitsPerSecond */
function formatBitrate(bitsPerSecond) {
  if (bitsPerSecond >= 1e6) return `${(bitsPerSecond / 1e6).toFixed(1)} Mb/s`;
  return `${Math.round(bitsPerSecond / 1e3)} kb/s`;
}

/** Refreshes the stats line once a second. @param {CanopyClient} client */
function pollStats(client) {
  let lastBytes = 0;
  let lastTime = 0;
  setInterval(async () => {
    if (client.state === 'closed') return;
    const s = await client.stats().catch(() => null);
    if (!s) return;
    const now = performance.now();
    const bytes = s.bytesReceived + s.audioBytesReceived;
    const rate = lastTime && bytes >= lastBytes ? ((bytes - lastBytes) * 8 * 1000) / (now - lastTime) : 0;
    lastBytes = bytes;
    lastTime = now;
    const parts = [`depth ${s.depth}`, formatBitrate(rate)];
    const w = s.videoWidth || video.videoWidth;
    const h = s.videoHeight || video.videoHeight;
    if (w && h) parts.push(`${w}×${h}`);
    parts.push(`${s.framesDecoded} frames`);
    if (s.framesDropped) parts.push(`${s.framesDropped} dropped`);
    if (s.rttMs !== undefined) parts.push(`rtt ${s.rttMs} ms`);
    statsLine.textContent = parts.join(' · ');
  }, 1000);
}

function main() {
  setupControls();
  const stream = streamFromPath();
  if (!stream) {
    show('error', 'invalid stream name');
    $('stream-name').textContent = 'Invalid stream name';
    /** @type {any} */ (window).canopy = { client: null, video };
    return;
  }
  document.title = `${stream} · Canopy`;
  $('stream-name').textContent = stream;
  $('title').textContent = stream;

  const client = new CanopyClient({ stream });
  /** @type {any} */ (window).canopy = { client, video };

  client.addEventListener('statechange', (ev) => {
    const { state, reason } = /** @type {CustomEvent} */ (ev).detail;
    show(state, reason);
  });
  client.addEventListener('track', (ev) => {
    const { stream: media } = /** @type {CustomEvent} */ (ev).detail;
    if (video.srcObject !== media) video.srcObject = media;
    video.play().catch(() => {}); // muted autoplay is allowed; a blocked play retries on unmute
  });
  client.addEventListener('error', (ev) => {
    const { code, reason } = /** @type {CustomEvent} */ (ev).detail;
    console.warn('canopy: server error', code, reason);
    if (code !== 'not_found' && client.state !== 'live') show('error', reason || code);
  });
  window.addEventListener('pagehide', () => client.close());
  window.addEventListener('pageshow', (ev) => { if (ev.persisted) location.reload(); });

  show('connecting');
  client.start();
  pollStats(client);
}

main();
