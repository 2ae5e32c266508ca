// Pure-logic tests of the player's decisions: when to report live and
// stalled, whether to relay, codec order, figures for people, stream names.
// Run with: node --test static/test/

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { CONNECT_TIMEOUT_MS, FIRST_FRAME_TIMEOUT_MS, PlaybackMonitor, STALL_AFTER_MS, STALL_REPEAT_MS } from '../js/monitor.js';
import { DEFAULT_RELAY_CAPACITY, looksMetered, relayCapacity } from '../js/relaypolicy.js';
import { orderCodecs } from '../js/relay.js';
import { formatBitrate, formatMs, kbps, relayLabel, sentence } from '../js/format.js';
import { streamFromPath } from '../js/watch-path.js';

/**
 * Feeds samples once a second and returns the verdicts.
 * @param {PlaybackMonitor} m
 * @param {Array<[number, number, boolean?, boolean?]>} samples [now, frames, connected=true, expected=true]
 */
function run(m, samples) {
  return samples.map(([now, frames, connected = true, expected = true]) => m.sample({ now, frames, connected, expected }));
}

test('monitor reports live once per parent, when frames first advance', () => {
  const m = new PlaybackMonitor();
  m.setParent('p1', 0);
  const v = run(m, [[1000, 0], [2000, 12], [3000, 40], [4000, 70]]);
  assert.deepEqual(v.map((x) => x.live), [false, true, false, false]);
  m.setParent('p2', 4500);
  const w = run(m, [[5000, 0], [6000, 5], [7000, 30]]);
  assert.deepEqual(w.map((x) => x.live), [false, true, false]);
});

test('monitor reports a stall once frames stop for more than 2 s, again only after 3 s', () => {
  const m = new PlaybackMonitor();
  m.setParent('p1', 0);
  const v = run(m, [[1000, 10], [2000, 40], [3000, 40], [4000, 40], [5000, 40], [6000, 40], [7000, 70], [8000, 70], [9000, 70], [10000, 70]]);
  // Last frame at 2000: 4000 is exactly 2 s (not more), 5000 is a stall; reported once.
  assert.deepEqual(v.map((x) => x.stalled), [false, false, false, false, true, false, false, false, false, true]);
  assert.equal(STALL_AFTER_MS, 2000);
});

test('monitor counts stall time only after something played and while the stream should play', () => {
  const m = new PlaybackMonitor();
  m.setParent('p1', 0);
  const v = run(m, [[1000, 0], [2000, 0], [3000, 30], [4000, 30], [5000, 30, true, false], [6000, 60]]);
  assert.deepEqual(v.map((x) => x.stallMs), [0, 0, 0, 1000, 0, 0]);
  assert.ok(m.everPlayed);
});

test('monitor gives a new connection longer for its first frame', () => {
  const m = new PlaybackMonitor();
  m.setParent('p1', 0);
  const samples = [];
  for (let t = 1000; t <= FIRST_FRAME_TIMEOUT_MS + 2000; t += 1000) samples.push(/** @type {[number, number]} */ ([t, 0]));
  const v = run(m, samples);
  const first = v.findIndex((x) => x.stalled);
  // Connected at the first sample (1000 ms); a stall once more than the timeout has passed since.
  assert.equal(samples[first][0], 1000 + FIRST_FRAME_TIMEOUT_MS + 1000);
  assert.equal(v.filter((x) => x.stalled).length, 1);
});

test('monitor says nothing while disconnected, offline, or without a parent', () => {
  const m = new PlaybackMonitor();
  m.setParent('p1', 0);
  run(m, [[1000, 30]]);
  const v = run(m, [[5000, 30, false], [9000, 30, true, false]]);
  assert.ok(v.every((x) => !x.stalled));
  m.setParent(null, 9000);
  assert.ok(run(m, [[20000, 0], [40000, 0]]).every((x) => !x.stalled && !x.live));
});

test('monitor reports a parent that never connects, and repeats while it stays silent', () => {
  const m = new PlaybackMonitor();
  m.setParent('p1', 0);
  const samples = [];
  for (let t = 1000; t <= 16000; t += 1000) samples.push(/** @type {[number, number, boolean]} */ ([t, 0, false]));
  const v = run(m, samples);
  const at = samples.filter((_, i) => v[i].stalled).map(([t]) => t);
  // Not connected more than 5 s after the parent was assigned, then every 3 s.
  assert.deepEqual(at, [6000, 9000, 12000, 15000]);
  assert.equal(CONNECT_TIMEOUT_MS, 5000);
  assert.equal(STALL_REPEAT_MS, 3000);
  // A new parent starts the clock again; one that connects and plays is not reported.
  m.setParent('p2', 16000);
  assert.ok(run(m, [[17000, 0, false], [18000, 5], [19000, 30], [20000, 60]]).every((x) => !x.stalled));
});

test('monitor repeats a stall report while frames stay stopped', () => {
  const m = new PlaybackMonitor();
  m.setParent('p1', 0);
  const v = run(m, [[1000, 10], [2000, 40], [5000, 40], [6000, 40], [8000, 40], [9000, 40], [10000, 70]]);
  assert.deepEqual(v.map((x) => x.stalled), [false, false, true, false, true, false, false]);
});

test('relay policy: page parameter, then remembered choice, then the connection', () => {
  assert.equal(relayCapacity({}), DEFAULT_RELAY_CAPACITY);
  assert.equal(relayCapacity({ param: '0' }), 0);
  assert.equal(relayCapacity({ param: 'off', stored: '1' }), 0);
  assert.equal(relayCapacity({ param: '1', connection: { saveData: true } }), DEFAULT_RELAY_CAPACITY);
  assert.equal(relayCapacity({ stored: '0' }), 0);
  assert.equal(relayCapacity({ stored: '1', connection: { type: 'cellular' } }), DEFAULT_RELAY_CAPACITY);
  assert.equal(relayCapacity({ param: 'maybe', connection: { saveData: true } }), 0);
  assert.equal(relayCapacity({ connection: { type: 'cellular' } }), 0);
  assert.equal(relayCapacity({ connection: { type: 'wifi', effectiveType: '4g' } }), DEFAULT_RELAY_CAPACITY);
});

test('metered connections', () => {
  assert.ok(!looksMetered(null));
  assert.ok(!looksMetered({}));
  assert.ok(looksMetered({ saveData: true }));
  assert.ok(looksMetered({ type: 'cellular' }));
  assert.ok(looksMetered({ effectiveType: '2g' }));
  assert.ok(!looksMetered({ type: 'ethernet', effectiveType: '4g', saveData: false }));
});

test('orderCodecs puts the preferred codec first and keeps the rest in order', () => {
  const codecs = [{ mimeType: 'video/VP9' }, { mimeType: 'video/rtx' }, { mimeType: 'video/VP8' }, { mimeType: 'video/H264' }, { mimeType: 'video/VP8', sdpFmtpLine: 'x' }];
  assert.deepEqual(orderCodecs(codecs, 'video/vp8').map((c) => c.mimeType), ['video/VP8', 'video/VP8', 'video/VP9', 'video/rtx', 'video/H264']);
  assert.equal(orderCodecs([{ mimeType: 'video/AV1' }], 'video/vp8').length, 1);
});

test('figures for people', () => {
  assert.equal(formatBitrate(0), '—');
  assert.equal(formatBitrate(NaN), '—');
  assert.equal(formatBitrate(850.4), '850 kb/s');
  assert.equal(formatBitrate(2140), '2.1 Mb/s');
  assert.equal(kbps(1000, 126000, 1000), 1000);
  assert.equal(kbps(5000, 100, 1000), 0, 'a counter that went back is a new connection');
  assert.equal(kbps(0, 100, 0), 0);
  assert.equal(formatMs(undefined), '—');
  assert.equal(formatMs(12.4), '12 ms');
  assert.equal(formatMs(1450), '1.4 s');
  assert.equal(relayLabel(0, 0), 'off');
  assert.equal(relayLabel(0, 2), 'ready, no one yet');
  assert.equal(relayLabel(1, 2), '1 viewer');
  assert.equal(relayLabel(2, 2), '2 viewers');
  assert.equal(sentence('joining the tree', '…'), 'Joining the tree…');
  assert.equal(sentence('lost the server.', '…'), 'Lost the server.');
  assert.equal(sentence('  ', '…'), '');
});

test('stream names from page paths', () => {
  assert.equal(streamFromPath('/watch/demo'), 'demo');
  assert.equal(streamFromPath('/embed/my_stream-2/'), 'my_stream-2');
  assert.equal(streamFromPath('/watch/a%20b'), null);
  assert.equal(streamFromPath('/watch/%E0%A4%A'), null);
  assert.equal(streamFromPath('/watch/'), 'watch');
  assert.equal(streamFromPath('/embed/' + 'x'.repeat(65)), null);
});
