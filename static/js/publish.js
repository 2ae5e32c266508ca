// The publish page: /publish/<stream>. Camera and microphone, or a screen or
// window, previewed here and sent to the server over WHIP (whip.js); the
// server makes the session the stream's source node. window.canopyPublish
// = { start, stop, session } for automated browser tests.

import { WhipSession } from './whip.js';
import { streamFromPath } from './watch-path.js';

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

/** Video constraints and sender bitrate per quality choice. */
const QUALITY = /** @type {Record<string, {width: number, height: number, kbps: number}>} */ ({
  360: { width: 640, height: 360, kbps: 800 },
  720: { width: 1280, height: 720, kbps: 2500 },
  1080: { width: 1920, height: 1080, kbps: 4500 },
});

const TOKEN_KEY = 'canopy.publishToken';

const stream = streamFromPath();
const preview = /** @type {HTMLVideoElement} */ ($('preview'));
const videoSel = /** @type {HTMLSelectElement} */ ($('video-device'));
const audioSel = /** @type {HTMLSelectElement} */ ($('audio-device'));
const qualitySel = /** @type {HTMLSelectElement} */ ($('quality'));
const codecSel = /** @type {HTMLSelectElement} */ ($('codec'));
const tokenInput = /** @type {HTMLInputElement} */ ($('token'));
const goLive = /** @type {HTMLButtonElement} */ ($('golive'));
const stopBtn = /** @type {HTMLButtonElement} */ ($('stop'));

/** @type {MediaStream|null} */
let media = null;
/** @type {WhipSession|null} */
let session = null;

/** @param {string} text */
function notice(text) { $('notice').textContent = text; }

/** @param {string} state @param {string} [label] */
function showState(state, label = state) {
  const badge = $('badge');
  badge.textContent = label;
  badge.dataset.state = state;
  $('sub').textContent = {
    live: 'Live: viewers can watch now',
    connecting: 'Connecting to the server…',
    reconnecting: 'Connection interrupted; reconnecting…',
  }[state] ?? 'Not live';
  const busy = state === 'live' || state === 'connecting' || state === 'reconnecting';
  goLive.disabled = busy || !stream;
  stopBtn.disabled = !busy;
  for (const el of [videoSel, audioSel, qualitySel, codecSel, tokenInput]) el.disabled = busy;
  for (const r of document.querySelectorAll('input[name="source"]')) /** @type {HTMLInputElement} */ (r).disabled = busy;
}

/** @returns {'camera'|'screen'} */
function sourceKind() {
  const r = /** @type {HTMLInputElement|null} */ (document.querySelector('input[name="source"]:checked'));
  return r && r.value === 'screen' ? 'screen' : 'camera';
}

/** Lists cameras and microphones; labels appear once permission is granted. */
async function listDevices() {
  if (!navigator.mediaDevices?.enumerateDevices) return;
  const devices = await navigator.mediaDevices.enumerateDevices();
  /** @param {HTMLSelectElement} sel @param {MediaDeviceKind} kind @param {string} noun */
  const fill = (sel, kind, noun) => {
    const keep = sel.value;
    sel.replaceChildren();
    const list = devices.filter((d) => d.kind === kind);
    list.forEach((d, i) => sel.append(new Option(d.label || `${noun} ${i + 1}`, d.deviceId)));
    if (kind === 'audioinput') sel.append(new Option('No microphone', 'none'));
    if (list.some((d) => d.deviceId === keep) || keep === 'none') sel.value = keep;
  };
  fill(videoSel, 'videoinput', 'Camera');
  fill(audioSel, 'audioinput', 'Microphone');
}

/** Stops the current capture. */
function stopMedia() {
  if (media) for (const t of media.getTracks()) t.stop();
  media = null;
  preview.srcObject = null;
}

/** Opens the chosen source and shows it in the preview. */
async function openMedia() {
  stopMedia();
  const q = QUALITY[qualitySel.value] ?? QUALITY[720];
  const video = { width: { ideal: q.width }, height: { ideal: q.height }, frameRate: { ideal: 30 } };
  if (sourceKind() === 'screen') {
    media = await navigator.mediaDevices.getDisplayMedia({ video, audio: true });
  } else {
    const audio = audioSel.value === 'none' ? false : (audioSel.value ? { deviceId: { exact: audioSel.value } } : true);
    media = await navigator.mediaDevices.getUserMedia({
      video: videoSel.value ? { ...video, deviceId: { exact: videoSel.value } } : video,
      audio,
    });
  }
  for (const t of media.getVideoTracks()) {
    t.contentHint = sourceKind() === 'screen' ? 'detail' : 'motion';
    // The person stopped sharing from the browser's own bar.
    t.addEventListener('ended', () => { if (session) stop(); });
  }
  preview.srcObject = media;
  await listDevices();
  notice('');
}

/** Opens the preview, reporting a refusal instead of throwing. */
async function refreshPreview() {
  if (session) return;
  try {
    await openMedia();
  } catch (e) {
    stopMedia();
    notice(`Cannot open the ${sourceKind() === 'screen' ? 'screen' : 'camera or microphone'}: ${/** @type {Error} */ (e).message}`);
  }
}

/** Goes live: captures if needed, then offers the capture over WHIP. */
async function start() {
  if (!stream || session) return;
  notice('');
  showState('connecting', 'connecting');
  try {
    if (!media || media.getTracks().every((t) => t.readyState === 'ended')) await openMedia();
  } catch (e) {
    showState('offline', 'offline');
    notice(`Cannot open the source: ${/** @type {Error} */ (e).message}`);
    return;
  }
  const token = tokenInput.value.trim();
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  const q = QUALITY[qualitySel.value] ?? QUALITY[720];
  const s = new WhipSession(`/whip/${encodeURIComponent(stream)}`, { token, codec: codecSel.value, maxBitrateKbps: q.kbps });
  session = s;
  s.addEventListener('statechange', (ev) => {
    const { state, reason } = /** @type {CustomEvent} */ (ev).detail;
    if (session !== s) return;
    if (state === 'failed') {
      session = null;
      s.close();
      showState('offline', 'offline');
      notice(`Not live: ${reason || 'the connection failed'}. Press Go live to try again.`);
      return;
    }
    showState(state, state === 'live' ? 'live' : state);
  });
  try {
    await s.publish(/** @type {MediaStream} */ (media));
  } catch (e) {
    if (session === s) {
      session = null;
      showState('offline', 'offline');
    }
    notice(`Not live: ${/** @type {Error} */ (e).message}`);
  }
}

/** Stops publishing; the preview stays. */
async function stop() {
  const s = session;
  session = null;
  if (s) await s.stop();
  showState('offline', 'offline');
}

/** Keeps the audience figures fresh. */
function pollAudience() {
  const refresh = async () => {
    if (document.hidden || !stream) return;
    const token = tokenInput.value.trim();
    /** @type {Record<string, string>} */
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    try {
      const res = await fetch(`/api/streams/${encodeURIComponent(stream)}/tree`, { cache: 'no-store', headers });
      if (!res.ok) {
        $('viewers').textContent = '0';
        $('treesize').textContent = '0';
        $('treedepth').textContent = '—';
        return;
      }
      const t = await res.json();
      const nodes = Array.isArray(t.nodes) ? t.nodes : [];
      const viewers = nodes.filter((/** @type {{role?: string}} */ n) => n.role !== 'source').length;
      const depth = nodes.reduce((/** @type {number} */ d, /** @type {{depth?: number}} */ n) => Math.max(d, Number(n.depth) || 0), 0);
      $('viewers').textContent = String(viewers);
      $('treesize').textContent = String(nodes.length);
      $('treedepth').textContent = nodes.length ? String(depth) : '—';
    } catch {
      // figures stay as they were; the state badge shows connection trouble
    }
  };
  refresh();
  setInterval(refresh, 2000);
}

function init() {
  if (!stream) {
    $('stream-name').textContent = 'No stream';
    notice('The address should be /publish/<stream>, with a name of letters, digits, - and _.');
    showState('offline', 'offline');
    return;
  }
  document.title = `Go live: ${stream} · Canopy`;
  $('stream-name').textContent = stream;
  $('title').textContent = 'Go live';
  const watch = /** @type {HTMLAnchorElement} */ ($('watch-link'));
  watch.href = `/watch/${encodeURIComponent(stream)}`;
  watch.textContent = `${location.origin}/watch/${stream}`;
  $('whip-url').textContent = `${location.origin}/whip/${stream}`;
  tokenInput.value = sessionStorage.getItem(TOKEN_KEY) ?? '';
  const params = new URLSearchParams(location.search);
  if (params.get('source') === 'screen') {
    const r = /** @type {HTMLInputElement|null} */ (document.querySelector('input[name="source"][value="screen"]'));
    if (r) r.checked = true;
  }
  const codec = (params.get('codec') ?? '').toUpperCase();
  if (codec === 'H264' || codec === 'VP8') codecSel.value = codec;
  goLive.addEventListener('click', () => { start(); });
  stopBtn.addEventListener('click', () => { stop(); });
  for (const el of [videoSel, audioSel, qualitySel]) el.addEventListener('change', refreshPreview);
  for (const r of document.querySelectorAll('input[name="source"]')) {
    // A screen picker needs a click of its own: open it on Go live, not now.
    r.addEventListener('change', () => { if (sourceKind() === 'camera') refreshPreview(); else stopMedia(); });
  }
  navigator.mediaDevices?.addEventListener?.('devicechange', () => { listDevices(); });
  window.addEventListener('pagehide', () => { if (session) session.stop(); });
  showState('offline', 'offline');
  listDevices().then(() => { if (sourceKind() === 'camera') refreshPreview(); });
  pollAudience();
  Object.assign(window, { canopyPublish: { start, stop, get session() { return session; } } });
}

init();
