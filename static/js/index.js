// The stream list at /: polls /api/streams and shows each live stream as a
// card linking to its watch page.

import { validID } from './protocol.js';

/**
 * One entry of GET /api/streams.
 * @typedef {object} StreamInfo
 * @property {string} id
 * @property {number} viewers
 * @property {boolean} live
 */

const REFRESH_MS = 3000;

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const grid = $('streams');
const empty = $('empty');
const notice = $('notice');

/** @param {number} n */
function viewersLabel(n) {
  return n === 1 ? '1 viewer' : `${n} viewers`;
}

/** @param {StreamInfo} s @returns {HTMLAnchorElement} */
function card(s) {
  const a = document.createElement('a');
  a.className = 'card';
  a.href = `/watch/${encodeURIComponent(s.id)}`;
  a.dataset.stream = s.id;

  const thumb = document.createElement('div');
  thumb.className = 'card-thumb';
  const badge = document.createElement('span');
  badge.className = 'badge';
  badge.textContent = 'live';
  thumb.append(badge);

  const body = document.createElement('div');
  body.className = 'card-body';
  const title = document.createElement('p');
  title.className = 'card-title';
  title.textContent = s.id;
  const sub = document.createElement('p');
  sub.className = 'card-sub';
  sub.textContent = viewersLabel(s.viewers);
  body.append(title, sub);

  a.append(thumb, body);
  return a;
}

/** @param {unknown} data @returns {StreamInfo[]} the well-formed live entries, sorted by audience */
function liveStreams(data) {
  if (!Array.isArray(data)) return [];
  return data
    .filter((s) => s && validID(s.id) && s.live === true)
    .map((s) => ({ id: s.id, live: true, viewers: Number.isFinite(s.viewers) && s.viewers > 0 ? Math.floor(s.viewers) : 0 }))
    .sort((a, b) => b.viewers - a.viewers || a.id.localeCompare(b.id));
}

async function refresh() {
  try {
    const res = await fetch('/api/streams', { cache: 'no-store' });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const streams = liveStreams(await res.json());
    grid.replaceChildren(...streams.map(card));
    empty.hidden = streams.length > 0;
    notice.textContent = '';
  } catch (err) {
    notice.textContent = `Could not reach the server (${/** @type {Error} */ (err).message}); retrying…`;
  }
}

function main() {
  $('broadcast-cmd').textContent =
    `go run ./client broadcast -server ${location.protocol}//${location.host} -stream NAME`;
  refresh();
  setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
  document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(); });
}

main();
