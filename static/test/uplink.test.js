// The uplink figures a browser relay reports, from its child links' stats.
// Run with: node --test static/test/

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { readLink, uplinkOf } from '../js/uplink.js';
import { encode, Type } from '../js/protocol.js';

/** A getStats report as Chromium shapes it for one child link. */
function report(/** @type {number} */ fractionLost, /** @type {number} */ rtt, /** @type {number} */ aob) {
  return /** @type {RTCStatsReport} */ (/** @type {unknown} */ (new Map([
    ['T', { id: 'T', type: 'transport', selectedCandidatePairId: 'CP' }],
    ['CP', { id: 'CP', type: 'candidate-pair', nominated: true, state: 'succeeded', availableOutgoingBitrate: aob }],
    ['RA', { id: 'RA', type: 'remote-inbound-rtp', kind: 'audio', fractionLost: 0.9, roundTripTime: 9 }],
    ['RV', { id: 'RV', type: 'remote-inbound-rtp', kind: 'video', fractionLost, roundTripTime: rtt }],
  ])));
}

test('a link: the video receiver report, its lowest round trip, the pair estimate', () => {
  const empty = /** @type {RTCStatsReport} */ (/** @type {unknown} */ (new Map()));
  assert.equal(readLink(empty, 0), null);
  const first = readLink(report(0.01, 0.02, 2_500_000), 0);
  assert.deepEqual(first, { fractionLost: 0.01, rttMs: 20, minRttMs: 20, estimateKbps: 2500 });
  const later = readLink(report(0.3, 0.2, 400_000), first?.minRttMs ?? 0);
  assert.deepEqual(later, { fractionLost: 0.3, rttMs: 200, minRttMs: 20, estimateKbps: 400 });
});

test('the uplink: lossy and queued links counted, and a valid stats message', () => {
  assert.equal(uplinkOf([], 100), undefined);
  const full = { fractionLost: 0.3, rttMs: 200, minRttMs: 20, estimateKbps: 400 };
  const clean = { fractionLost: 0, rttMs: 21, minRttMs: 20, estimateKbps: 2500 };
  const u = uplinkOf([full, full, clean], 1800);
  assert.ok(u && Math.abs(u.loss - 0.2) < 1e-9);
  assert.deepEqual({ ...u, loss: 0.2 }, { links: 3, lossy: 2, queued: 2, loss: 0.2, rttMs: (200 + 200 + 21) / 3, sentKbps: 1800, estimateKbps: 2500 });
  assert.match(encode({ type: Type.STATS, stats: { children: 3, uplink: u } }), /"uplink":\{"links":3,"lossy":2,"queued":2/);
});
