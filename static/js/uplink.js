// A browser relay's upload as its children see it: the figures of the
// stats report's uplink (protocol.Uplink), read from each child link's
// getStats. The server judges them (README "Capacity from measured
// uplink"); mesh/uplink.go measures the same for Go relays.

import { UPLINK_LOSSY, UPLINK_QUEUE_MS } from './protocol.js';

/**
 * What one child link's getStats says of the upload to that child.
 * @typedef {object} LinkFigures
 * @property {number} fractionLost the child's last receiver report on video, 0-1
 * @property {number} rttMs the round trip from that report; 0 unknown
 * @property {number} minRttMs the lowest round trip seen on the link
 * @property {number} estimateKbps availableOutgoingBitrate of the selected pair; 0 unknown
 */

/**
 * Reads a child link's figures from its stats report.
 * @param {RTCStatsReport} report
 * @param {number} minRttMs the lowest round trip seen on the link so far (0: none)
 * @returns {LinkFigures|null} null before the child's first receiver report
 */
export function readLink(report, minRttMs) {
  /** @type {LinkFigures|null} */
  let out = null;
  let pairId = '';
  /** @type {Map<string, any>} */
  const pairs = new Map();
  report.forEach((/** @type {any} */ r) => {
    if (r.type === 'transport' && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId;
    if (r.type === 'candidate-pair') pairs.set(r.id, r);
    if (r.type === 'remote-inbound-rtp' && (r.kind ?? r.mediaType) === 'video') {
      const rttMs = (r.roundTripTime ?? 0) * 1000;
      out = {
        fractionLost: Math.min(Math.max(r.fractionLost ?? 0, 0), 1),
        rttMs,
        minRttMs: rttMs > 0 && (minRttMs === 0 || rttMs < minRttMs) ? rttMs : minRttMs,
        estimateKbps: 0,
      };
    }
  });
  const link = /** @type {LinkFigures|null} */ (out);
  const pair = pairs.get(pairId) ?? [...pairs.values()].find((p) => p.nominated && p.state === 'succeeded');
  if (link && pair?.availableOutgoingBitrate) link.estimateKbps = pair.availableOutgoingBitrate / 1000;
  return link;
}

/**
 * The uplink figures of a stats report from the child links' figures.
 * @param {LinkFigures[]} links
 * @param {number} sentKbps what the tab sent all its children, last interval
 * @returns {import('./protocol.js').Uplink|undefined} undefined without links
 */
export function uplinkOf(links, sentKbps) {
  if (links.length === 0) return undefined;
  let loss = 0;
  let rtt = 0;
  let lossy = 0;
  let queued = 0;
  let estimate = 0;
  for (const l of links) {
    loss += l.fractionLost;
    rtt += l.rttMs;
    if (l.fractionLost > UPLINK_LOSSY) lossy++;
    if (l.rttMs > 0 && l.rttMs - l.minRttMs > UPLINK_QUEUE_MS) queued++;
    estimate = Math.max(estimate, l.estimateKbps);
  }
  return {
    links: links.length, lossy, queued, loss: loss / links.length, rttMs: rtt / links.length,
    sentKbps: Math.max(sentKbps, 0), estimateKbps: estimate,
  };
}
