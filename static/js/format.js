// Formatting of playback figures for people; pure.

/**
 * @param {number} kbps
 * @returns {string} e.g. "850 kb/s", "2.1 Mb/s", "—" when unknown
 */
export function formatBitrate(kbps) {
  if (!Number.isFinite(kbps) || kbps <= 0) return '—';
  if (kbps >= 1000) return `${(kbps / 1000).toFixed(1)} Mb/s`;
  return `${Math.round(kbps)} kb/s`;
}

/**
 * Rate of a byte counter over an interval, in kilobits per second; 0 when
 * the counter went backwards (a new connection) or the interval is empty.
 * @param {number} prevBytes
 * @param {number} bytes
 * @param {number} dtMs
 * @returns {number}
 */
export function kbps(prevBytes, bytes, dtMs) {
  if (!(dtMs > 0) || !(bytes >= prevBytes)) return 0;
  return ((bytes - prevBytes) * 8) / dtMs;
}

/**
 * @param {number|undefined} ms
 * @returns {string} e.g. "120 ms", "1.4 s", "—" when unknown
 */
export function formatMs(ms) {
  if (ms === undefined || !Number.isFinite(ms) || ms < 0) return '—';
  if (ms >= 1000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.round(ms)} ms`;
}

/**
 * @param {number} n children fed
 * @param {number} capacity children offered; 0 when not relaying
 * @returns {string}
 */
export function relayLabel(n, capacity) {
  if (capacity <= 0) return 'off';
  if (n <= 0) return 'ready, no one yet';
  return n === 1 ? '1 viewer' : `${n} viewers`;
}

/**
 * Capitalises a reason and ends it with the given mark, for an overlay line.
 * @param {string} reason
 * @param {string} mark
 */
export function sentence(reason, mark) {
  const r = reason.trim();
  if (!r) return '';
  return r.charAt(0).toUpperCase() + r.slice(1) + (/[.!?…]$/.test(r) ? '' : mark);
}
