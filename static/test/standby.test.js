import { test } from 'node:test';
import assert from 'node:assert/strict';

import { MEDIA_SILENCE_MS, STARVED_POLL_MS, SilenceWatch, parentFailed } from '../js/standby.js';

test('a connection is silent from its newest packet on, and never before it received one', () => {
  const w = new SilenceWatch();
  const pc = {};
  assert.equal(w.silentFor(pc, [], 1000, 0), 0);
  assert.equal(w.silentFor(pc, [900, 950], 1000, 0), 50);
  // The entries vanish 10 s after the last packet: the newest time seen stays.
  let now = 1000;
  for (; now < 1000 + MEDIA_SILENCE_MS + 1; now += 100) w.silentFor(pc, [], now, 0);
  assert.equal(w.silentFor(pc, [], now, 0), now - 950);
  assert.ok(now - 950 > MEDIA_SILENCE_MS);
  // Another connection starts afresh.
  assert.equal(w.silentFor({}, [], 5000, 0), 0);
});

test('epoch timestamps (older Chromiums) are read against the wall clock', () => {
  const w = new SilenceWatch();
  const wall = 1_700_000_000_000;
  assert.equal(w.silentFor({}, [wall - 300], 10_000, wall), 300);
});

test('failed, closed and disconnected connections count as a failed parent', () => {
  assert.equal(parentFailed({ connectionState: 'connected', iceConnectionState: 'connected' }), false);
  assert.equal(parentFailed({ connectionState: 'connecting', iceConnectionState: 'checking' }), false);
  for (const [c, i] of [['failed', 'failed'], ['disconnected', 'connected'], ['connected', 'disconnected'], ['closed', 'closed']]) {
    assert.equal(parentFailed({ connectionState: c, iceConnectionState: i }), true, `${c}/${i}`);
  }
});

test('a starved tab does not blame its parent: silence counts again from the late poll', () => {
  const w = new SilenceWatch();
  const pc = {};
  w.silentFor(pc, [100], 100, 0);
  // The tab's own timers ran 2 s late: no packet time was read meanwhile.
  const late = 100 + STARVED_POLL_MS + 2000;
  assert.equal(w.silentFor(pc, [100], late, 0), 0);
  assert.equal(w.silentFor(pc, [], late + 100, 0), 100);
});

test('silenceLimit: a re-encoding tab switches on silence only after the server\'s quiet', async () => {
  const { silenceLimit, QUIET_SILENCE_MS } = await import('../js/standby.js');
  assert.equal(silenceLimit(false, true), MEDIA_SILENCE_MS);
  assert.equal(silenceLimit(true, true), QUIET_SILENCE_MS);
  assert.equal(silenceLimit(true, false), QUIET_SILENCE_MS);
  assert.equal(silenceLimit(false, false), Infinity);
});
