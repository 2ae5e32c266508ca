// The browser client's resume, driven through a fake WebSocket: a dropped
// connection is resumed with the welcome's token (the same server first,
// then the next of the list), messages sent meanwhile are held and sent
// after the resumed welcome, and a refused resume joins afresh.
// Run with: node --test static/test/

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { CanopyClient, KEEPALIVE, keepaliveVerdict, signalingURLs } from '../js/client.js';

/** A stand-in for the browser's WebSocket: records what is sent. */
class FakeWS {
  static OPEN = 1;
  /** @type {FakeWS[]} */
  static all = [];
  /** @param {string} url */
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    /** @type {any[]} */
    this.sent = [];
    /** @type {any} */ this.onopen = null;
    /** @type {any} */ this.onmessage = null;
    /** @type {any} */ this.onclose = null;
    /** @type {any} */ this.onerror = null;
    FakeWS.all.push(this);
  }
  /** @param {string} data */
  send(data) { this.sent.push(JSON.parse(data)); }
  close() { this.drop(); }
  open() {
    this.readyState = FakeWS.OPEN;
    this.onopen?.();
  }
  /** @param {object} m */
  deliver(m) { this.onmessage?.({ data: JSON.stringify(m) }); }
  drop() {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.();
  }
}

/** Waits until cond holds (timers and promises run meanwhile). @param {() => boolean} cond */
async function until(cond, ms = 5000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** The last socket, once the client opened it. */
function last() { return FakeWS.all[FakeWS.all.length - 1]; }

/** Opens the last socket and waits for its hello. */
async function hello() {
  const ws = last();
  ws.open();
  await until(() => ws.sent.some((m) => m.type === 'hello'));
  return ws.sent.find((m) => m.type === 'hello');
}

test('signalingURLs takes one origin or a list', () => {
  assert.deepEqual(signalingURLs('http://a:1, https://b.example/x,'), ['ws://a:1/ws', 'wss://b.example/ws']);
  assert.throws(() => signalingURLs(' , '));
});

test('a dropped connection resumes with its token, through the next server, and keeps what it sent', async () => {
  /** @type {any} */ (globalThis).WebSocket = FakeWS;
  FakeWS.all = [];
  const c = new CanopyClient({ server: 'http://a.test,http://b.test', stream: 's', passthrough: false, capacity: 0 });
  /** @type {string[]} */
  const events = [];
  c.addEventListener('resuming', () => events.push('resuming'));
  c.addEventListener('resumed', () => events.push('resumed'));
  c.start();
  try {
    assert.equal(last().url, 'ws://a.test/ws');
    const first = await hello();
    assert.equal(first.resume, undefined);
    last().deliver({ type: 'welcome', id: 'p1', stream: 's', resume: 'r1.s.p1.1.9.mac', grace: 10000 });
    assert.equal(c.id, 'p1');

    last().drop(); // the cut: the same server at once
    await until(() => FakeWS.all.length === 2);
    assert.equal(last().url, 'ws://a.test/ws');
    last().drop(); // that server is down now: the next one
    await until(() => FakeWS.all.length === 3, 3000);
    assert.equal(last().url, 'ws://b.test/ws');
    c._send({ type: 'live', peer: 'src' }); // sent while away: held
    const again = await hello();
    assert.equal(again.resume, 'r1.s.p1.1.9.mac');
    assert.equal(last().sent.filter((m) => m.type === 'live').length, 0, 'nothing but the hello before the resumed welcome');
    last().deliver({ type: 'welcome', id: 'p1', stream: 's', resumed: true, resume: 'r1.s.p1.2.9.mac', grace: 10000 });
    assert.deepEqual(events, ['resuming', 'resumed']);
    assert.equal(c.id, 'p1');
    assert.deepEqual(last().sent.filter((m) => m.type === 'live'), [{ type: 'live', peer: 'src' }]);
    assert.notEqual(c.state, 'reconnecting');

    // The next drop uses the new token; a refusal joins afresh.
    last().drop();
    await until(() => FakeWS.all.length === 4);
    assert.equal((await hello()).resume, 'r1.s.p1.2.9.mac');
    last().deliver({ type: 'error', code: 'resume_refused', reason: 'no place to resume' });
    last().drop();
    await until(() => FakeWS.all.length === 5, 3000);
    assert.equal((await hello()).resume, undefined, 'a fresh hello after a refused resume');
  } finally {
    c.close();
  }
});

test('a browser without a receive transform says noVerify, and its panel says why', async () => {
  /** @type {any} */ (globalThis).WebSocket = FakeWS;
  FakeWS.all = [];
  assert.equal(typeof (/** @type {any} */ (globalThis).RTCRtpScriptTransform), 'undefined', 'node has no receive transform');
  const c = new CanopyClient({ server: 'http://a.test', stream: 's', capacity: 0 });
  c.start();
  try {
    const h = await hello();
    assert.equal(h.noVerify, true);
    assert.equal(h.passthrough, undefined, 'it cannot pass frames through either');
    const key = 'A'.repeat(43); // any 32-byte key, base64url
    last().deliver({ type: 'welcome', id: 'p1', stream: 's', sourceKey: key });
    const s = await c.frameChecks.sample(null, 0);
    assert.equal(s.verification, 'unverified');
    assert.equal(s.unverifiedWhy, 'no transform');
  } finally {
    c.close();
  }
});

test('the keepalive pings an idle server, and gives up one that does not answer', () => {
  const a = { created: 0, heard: 0, pinged: 0, welcomed: false };
  assert.equal(keepaliveVerdict(a, false, KEEPALIVE.connect), '', 'connecting, within the timeout');
  assert.match(keepaliveVerdict(a, false, KEEPALIVE.connect + 1), /did not open/);
  a.heard = 100; // opened
  assert.equal(keepaliveVerdict(a, true, 100 + KEEPALIVE.hello), '', 'a hello waiting at its edge');
  assert.match(keepaliveVerdict(a, true, 101 + KEEPALIVE.hello), /no welcome/);
  a.welcomed = true;
  assert.equal(keepaliveVerdict(a, true, 100 + KEEPALIVE.idle - 1), '');
  assert.equal(keepaliveVerdict(a, true, 100 + KEEPALIVE.idle), 'ping');
  a.pinged = 100 + KEEPALIVE.idle;
  assert.equal(keepaliveVerdict(a, true, a.pinged + KEEPALIVE.pongTimeout), '', 'the pong may still come');
  assert.match(keepaliveVerdict(a, true, a.pinged + KEEPALIVE.pongTimeout + 1), /no pong/);
  // A pong (any message) settles it; a minute of silence without a ping
  // (a hidden tab's timers) is not a dead server: the next tick pings.
  a.heard = a.pinged + 10;
  assert.equal(keepaliveVerdict(a, true, a.heard + 60_000), 'ping');
});
