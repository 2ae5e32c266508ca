// Pure-logic tests of the browser's protocol mirror and reconnect schedule.
// Run with: node --test static/test/

import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  Code, MAX_CANDIDATE_LENGTH, MAX_EDGE_CANDIDATES, MAX_MESSAGE_SIZE, MAX_RECLAIM_LENGTH, MAX_SDP_LENGTH, ProtocolError, SERVER_TYPES,
  SignalKind, Type, VERSION, decode, encode, validID,
} from '../js/protocol.js';
import { BACKOFF_MAX_MS, backoffDelay } from '../js/backoff.js';

const hello = { type: 'hello', v: VERSION, role: 'viewer', kind: 'browser', stream: 'demo', capacity: 0 };
const candidate = { candidate: 'candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host', sdpMid: '0', sdpMLineIndex: 0 };

/** @param {() => unknown} fn @param {string} [code] */
function rejects(fn, code = Code.BAD_MESSAGE) {
  assert.throws(fn, (err) => err instanceof ProtocolError && err.code === code);
}

test('validID', () => {
  for (const ok of ['a', 'demo', 'A_b-9', 'x'.repeat(64)]) assert.ok(validID(ok), ok);
  for (const bad of ['', 'x'.repeat(65), 'a b', 'é', 'a/b', '../x', null, 3]) assert.ok(!validID(bad), String(bad));
});

test('encode omits empty fields as Go omitempty does', () => {
  assert.equal(encode(hello), '{"type":"hello","v":1,"role":"viewer","kind":"browser","stream":"demo"}');
  const withToken = JSON.parse(encode({ ...hello, capacity: 3, token: 't0k' }));
  assert.equal(withToken.capacity, 3);
  assert.equal(withToken.token, 't0k');
  assert.equal(encode({ type: 'leave' }), '{"type":"leave"}');
  assert.equal(encode({ ...hello, passthrough: false }), encode(hello));
  assert.equal(JSON.parse(encode({ ...hello, capacity: 2, passthrough: true })).passthrough, true);
  assert.equal(encode({ ...hello, noVerify: false }), encode(hello));
  assert.equal(JSON.parse(encode({ ...hello, capacity: 2, noVerify: true })).noVerify, true);
  assert.equal(decode('{"type":"attach","peer":"p3","strip":true}').strip, true);
  assert.equal(decode('{"type":"standby","peer":"p3","strip":true}').strip, true);
});

test('encode validates what the browser sends', () => {
  rejects(() => encode({ ...hello, v: 2 }));
  rejects(() => encode({ ...hello, stream: 'bad name' }));
  rejects(() => encode({ ...hello, role: 'king' }));
  rejects(() => encode({ ...hello, kind: 'rust' }));
  rejects(() => encode({ ...hello, capacity: 1001 }));
  rejects(() => encode({ ...hello, capacity: -1 }));
  rejects(() => encode({ ...hello, token: 'x'.repeat(4097) }));
  rejects(() => encode({ ...hello, tracks: [{ id: 'v', kind: 'video', mimeType: 'video/VP8', clockRate: 90000 }] }));
  rejects(() => encode({ ...hello, kind: 'go', passthrough: true }));
  rejects(() => encode({ ...hello, role: 'source', passthrough: true, tracks: [{ id: 'v', kind: 'video', mimeType: 'video/VP8', clockRate: 90000 }] }));
  rejects(() => decode('{"type":"hello","v":1,"role":"viewer","kind":"browser","stream":"demo","passthrough":1}'));
  rejects(() => encode({ ...hello, kind: 'go', noVerify: true }));
  rejects(() => encode({ ...hello, noVerify: true, passthrough: true }));
  rejects(() => decode('{"type":"parent","peer":"p2","noVerify":true}'));
  rejects(() => decode('{"type":"parent","peer":"p2","strip":true}'));
  rejects(() => decode('{"type":"standby","standby":"p2","strip":true}'));
  rejects(() => encode({ type: 'signal', peer: 'p1', signal: { kind: 'answer', sdp: '' } }));
  rejects(() => encode(/** @type {any} */ ({ type: 'signal', peer: 'p1', signal: { kind: 'answer', sdp: 'v=0', extra: 1 } })));
  const answer = { type: 'signal', peer: 'p1', signal: { kind: 'answer', sdp: 'v=0\r\n' } };
  assert.deepEqual(JSON.parse(encode(answer)), answer);
  const cand = { type: 'signal', peer: 'p1', signal: { kind: 'candidate', candidate } };
  assert.deepEqual(JSON.parse(encode(cand)), cand);
});

test('encode and decode round trip every server message', () => {
  const msgs = [
    { type: 'welcome', id: 'peer1', stream: 'demo', iceServers: [{ urls: ['stun:stun.example.org'] }, { urls: ['turn:t.example.org'], username: 'u', credential: 'c' }], tracks: [{ id: 'video', kind: 'video', mimeType: 'video/VP8', clockRate: 90000 }, { id: 'audio', kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2 }] },
    { type: 'parent', peer: 'src', depth: 1 },
    { type: 'parent', peer: 'src' }, // depth 0 is omitted by Go
    { type: 'attach', peer: 'kid', depth: 3 },
    { type: 'detach', peer: 'src', reason: 'parent left' },
    { type: 'signal', peer: 'src', signal: { kind: 'offer', sdp: 'v=0\r\n' } },
    { type: 'signal', peer: 'src', signal: { kind: 'candidate', candidate } },
    { type: 'offline' },
    { type: 'error', code: 'not_found', reason: 'no stream "x"' },
    { type: 'welcome', id: 'peer1', stream: 'demo', resume: 'r1.demo.peer1.1.1999999999.mac-_', grace: 10000 },
    { type: 'welcome', id: 'peer1', stream: 'demo', resumed: true, peer: 'src', depth: 2, standby: 'sb', children: ['k1', 'k2'], held: ['k3'] },
    { type: 'resume', resume: 'r1.demo.peer1.1.1999999999.mac' },
  ];
  for (const m of msgs) {
    assert.ok(SERVER_TYPES.has(m.type), m.type);
    assert.deepEqual(decode(encode(m)), m);
  }
});

test('decode rejects malformed text', () => {
  for (const text of ['', 'nope', '[]', '"hello"', 'null', '{"type":"welcome"', '{"type":"offline"} {}']) {
    rejects(() => decode(text));
  }
  rejects(() => decode(/** @type {any} */ (42)));
});

test('decode rejects unknown types and fields', () => {
  rejects(() => decode('{"type":"teleport"}'));
  rejects(() => decode('{}'));
  rejects(() => decode('{"type":""}'));
  rejects(() => decode('{"type":"offline","extra":true}'));
  rejects(() => decode('{"type":"welcome","id":"a","stream":"s","tracks":[{"id":"v","kind":"video","mimeType":"video/VP8","clockRate":90000,"x":1}]}'));
  rejects(() => decode('{"type":"welcome","id":"a","stream":"s","iceServers":[{"urls":["stun:x"],"x":1}]}'));
  rejects(() => decode('{"type":"signal","peer":"p","signal":{"kind":"offer","sdp":"v=0","x":1}}'));
});

test('decode checks field types', () => {
  rejects(() => decode('{"type":1}'));
  rejects(() => decode('{"type":"parent","peer":7}'));
  rejects(() => decode('{"type":"parent","peer":"p","depth":"2"}'));
  rejects(() => decode('{"type":"parent","peer":"p","depth":1.5}'));
  rejects(() => decode('{"type":"welcome","id":"a","stream":"s","iceServers":{"urls":["stun:x"]}}'));
  rejects(() => decode('{"type":"welcome","id":"a","stream":"s","iceServers":[{"urls":[1]}]}'));
  rejects(() => decode('{"type":"welcome","id":"a","stream":"s","iceServers":["stun:x"]}'));
  rejects(() => decode('{"type":"welcome","id":"a","stream":"s","tracks":[{"id":"v","kind":"video","mimeType":"video/VP8","clockRate":-1}]}'));
  rejects(() => decode('{"type":"signal","peer":"p","signal":"offer"}'));
  rejects(() => decode('{"type":"error","code":404}'));
  // JSON null leaves the zero value, as in Go.
  assert.deepEqual(decode('{"type":"offline","reason":null}'), { type: 'offline' });
});

test('decode applies the rules of each type', () => {
  rejects(() => decode('{"type":"welcome","id":"a"}'));
  rejects(() => decode('{"type":"welcome","id":"a b","stream":"s"}'));
  rejects(() => decode('{"type":"parent"}'));
  rejects(() => decode('{"type":"parent","peer":"p","depth":-1}'));
  rejects(() => decode(`{"type":"parent","peer":"p","depth":${(1 << 16) + 1}}`));
  rejects(() => decode('{"type":"detach","peer":"../p"}'));
  rejects(() => decode('{"type":"error"}'));
  rejects(() => decode(JSON.stringify({ type: 'offline', reason: 'x'.repeat(513) })));
  rejects(() => decode('{"type":"signal","peer":"p"}'));
  rejects(() => decode('{"type":"signal","signal":{"kind":"offer","sdp":"v=0"}}'));
  rejects(() => decode('{"type":"signal","peer":"p","signal":{"kind":"rollback","sdp":"v=0"}}'));
  rejects(() => decode('{"type":"signal","peer":"p","signal":{"kind":"offer"}}'));
  rejects(() => decode(JSON.stringify({ type: 'signal', peer: 'p', signal: { kind: 'offer', sdp: 'x'.repeat(MAX_SDP_LENGTH + 1) } })));
  rejects(() => decode(JSON.stringify({ type: 'signal', peer: 'p', signal: { kind: 'offer', sdp: 'v=0', candidate } })));
  rejects(() => decode(JSON.stringify({ type: 'signal', peer: 'p', signal: { kind: 'candidate', sdp: 'v=0', candidate } })));
  rejects(() => decode('{"type":"signal","peer":"p","signal":{"kind":"candidate"}}'));
  rejects(() => decode('{"type":"signal","peer":"p","signal":{"kind":"candidate","candidate":"x"}}'));
  const big = { candidate: 'c'.repeat(MAX_CANDIDATE_LENGTH) };
  rejects(() => decode(JSON.stringify({ type: 'signal', peer: 'p', signal: { kind: 'candidate', candidate: big } })));
  const tracks = Array.from({ length: 9 }, (_, i) => ({ id: `t${i}`, kind: 'video', mimeType: 'video/VP8', clockRate: 90000 }));
  rejects(() => decode(JSON.stringify({ type: 'welcome', id: 'a', stream: 's', tracks })));
  const dup = [tracks[0], tracks[0]];
  rejects(() => decode(JSON.stringify({ type: 'welcome', id: 'a', stream: 's', tracks: dup })));
  rejects(() => decode(JSON.stringify({ type: 'welcome', id: 'a', stream: 's', tracks: [{ ...tracks[0], kind: 'data' }] })));
  rejects(() => decode(JSON.stringify({ type: 'welcome', id: 'a', stream: 's', tracks: [{ ...tracks[0], clockRate: 0 }] })));
  rejects(() => decode(JSON.stringify({ type: 'welcome', id: 'a', stream: 's', tracks: [{ ...tracks[0], mimeType: '' }] })));
});

test('decode enforces the size limit in UTF-8 bytes', () => {
  rejects(() => decode(' '.repeat(MAX_MESSAGE_SIZE + 1)), Code.TOO_LARGE);
  // 'é' is 2 bytes: exactly at the limit in UTF-16 code units, over it in bytes.
  const head = '{"type":"offline"';
  const tail = `,"reason":"${'é'.repeat(20)}"}`;
  const text = head + ' '.repeat(MAX_MESSAGE_SIZE - head.length - tail.length) + tail;
  assert.equal(text.length, MAX_MESSAGE_SIZE);
  rejects(() => decode(text), Code.TOO_LARGE);
  const fits = head + ' '.repeat(MAX_MESSAGE_SIZE - head.length - 1) + '}';
  assert.deepEqual(decode(fits), { type: 'offline' });
});

test('constants mirror protocol.go', () => {
  assert.equal(VERSION, 1);
  assert.equal(MAX_MESSAGE_SIZE, 65536);
  assert.equal(Type.SIGNAL, 'signal');
  assert.equal(SignalKind.CANDIDATE, 'candidate');
  assert.equal(Code.STATE, 'bad_state');
  assert.equal(Code.UNAUTHORIZED, 'unauthorized');
  assert.equal(Code.RATE_LIMITED, 'rate_limited');
  assert.equal(MAX_EDGE_CANDIDATES, 64);
  assert.ok(!SERVER_TYPES.has(Type.HELLO) && !SERVER_TYPES.has(Type.LEAVE));
});

test('backoff doubles from 0.5 s to a 10 s cap', () => {
  const none = { random: () => 0 };
  const schedule = Array.from({ length: 8 }, (_, i) => backoffDelay(i, none));
  assert.deepEqual(schedule, [500, 1000, 2000, 4000, 8000, 10000, 10000, 10000]);
  assert.equal(backoffDelay(1000, none), BACKOFF_MAX_MS);
  assert.equal(backoffDelay(-3, none), 500);
  assert.equal(backoffDelay(NaN, none), 500);
});

test('backoff jitter stays within its band', () => {
  assert.equal(backoffDelay(0, { random: () => 0.999999 }), 375);
  assert.equal(backoffDelay(10, { random: () => 0.5 }), 8750);
  for (let i = 0; i < 1000; i++) {
    const attempt = i % 8;
    const d = backoffDelay(attempt);
    const full = Math.min(10000, 500 * 2 ** attempt);
    assert.ok(d >= 0.75 * full && d <= full, `attempt ${attempt}: ${d}`);
  }
  assert.equal(backoffDelay(2, { random: () => 0, jitter: 0.5, base: 100, max: 300 }), 300);
});

test('live, stalled and stats reports, as protocol.go validates them', () => {
  assert.equal(encode({ type: Type.LIVE, peer: 'p1' }), '{"type":"live","peer":"p1"}');
  assert.equal(encode({ type: Type.STALLED, peer: 'p1' }), '{"type":"stalled","peer":"p1"}');
  assert.equal(encode({ type: Type.LIVE }), '{"type":"live"}');
  rejects(() => encode({ type: Type.STALLED, peer: 'bad peer' }));
  const stats = { framesDecoded: 120, bytesReceived: 0, jitterMs: 1.5, bitrateKbps: 800, children: 2 };
  assert.equal(encode({ type: Type.STATS, stats }),
    '{"type":"stats","stats":{"framesDecoded":120,"jitterMs":1.5,"bitrateKbps":800,"children":2}}');
  assert.equal(encode({ type: Type.STATS, stats: {} }), '{"type":"stats","stats":{}}');
  rejects(() => encode({ type: Type.STATS }));
  rejects(() => encode({ type: Type.STATS, stats: { jitterMs: -1 } }));
  rejects(() => encode({ type: Type.STATS, stats: { bitrateKbps: 2e12 } }));
  rejects(() => encode({ type: Type.STATS, stats: { children: 1001 } }));
  rejects(() => encode({ type: Type.STATS, stats: { framesDecoded: -3 } }));
  rejects(() => encode({ type: Type.STATS, stats: /** @type {any} */ ({ fps: 30 }) }));
  rejects(() => encode({ type: Type.STATS, stats: { stallMs: NaN } }));
  assert.equal(encode({ type: Type.STATS, stats: { framesVerified: 2 ** 53 - 1, framesRejected: 2, verification: 'tampered' } }),
    '{"type":"stats","stats":{"framesVerified":9007199254740991,"framesRejected":2,"verification":"tampered"}}');
  rejects(() => encode({ type: Type.STATS, stats: { framesVerified: 2 ** 53 } }));
  rejects(() => encode({ type: Type.STATS, stats: { framesRejected: -1 } }));
  rejects(() => encode({ type: Type.STATS, stats: /** @type {any} */ ({ verification: 'trust me' }) }));
  const uplink = { links: 3, lossy: 3, queued: 2, loss: 0.3, rttMs: 180, sentKbps: 1600, estimateKbps: 0 };
  assert.equal(encode({ type: Type.STATS, stats: { children: 3, uplink } }),
    '{"type":"stats","stats":{"children":3,"uplink":{"links":3,"lossy":3,"queued":2,"loss":0.3,"rttMs":180,"sentKbps":1600}}}');
  rejects(() => encode({ type: Type.STATS, stats: { uplink: { links: 1, loss: 1.5 } } }));
  rejects(() => encode({ type: Type.STATS, stats: { uplink: { links: 1, lossy: 2 } } }));
  rejects(() => encode({ type: Type.STATS, stats: { uplink: { queued: 1 } } }));
  rejects(() => encode({ type: Type.STATS, stats: { uplink: { sentKbps: -1 } } }));
  rejects(() => encode({ type: Type.STATS, stats: { uplink: /** @type {any} */ ({ bogus: 1 }) } }));
});

test('parent messages may name a standby peer', () => {
  const m = decode('{"type":"parent","peer":"p1","depth":2,"standby":"p2"}');
  assert.equal(m.standby, 'p2');
  rejects(() => decode('{"type":"parent","peer":"p1","standby":"not ok"}'));
  assert.ok(!SERVER_TYPES.has(Type.STATS) && !SERVER_TYPES.has(Type.LIVE), 'reports only go up');
});

test('standby and promote messages name one peer', () => {
  assert.equal(decode('{"type":"standby","peer":"p3"}').peer, 'p3');
  assert.equal(decode('{"type":"standby","standby":"p4"}').standby, 'p4');
  assert.equal(decode('{"type":"standby"}').type, Type.STANDBY, 'a child told it has no standby');
  assert.equal(decode('{"type":"promote","peer":"p4"}').peer, 'p4');
  rejects(() => decode('{"type":"standby","peer":"p1","standby":"p2"}'));
  rejects(() => decode('{"type":"standby","peer":"a b"}'));
  rejects(() => decode('{"type":"standby","standby":"a/b"}'));
  rejects(() => decode('{"type":"promote"}'));
  rejects(() => encode({ type: Type.PROMOTE, peer: 'not ok' }));
  // Pass-through browsers hold standby links (standby.js): the client reads both.
  assert.ok(SERVER_TYPES.has(Type.STANDBY) && SERVER_TYPES.has(Type.PROMOTE));
});

test('capacity messages carry 0-1000 children', () => {
  assert.equal(encode({ type: Type.CAPACITY, capacity: 0 }), '{"type":"capacity"}');
  assert.equal(encode({ type: Type.CAPACITY, capacity: 2 }), '{"type":"capacity","capacity":2}');
  assert.throws(() => encode({ type: Type.CAPACITY, capacity: 1001 }));
  assert.throws(() => encode({ type: Type.CAPACITY, capacity: -1 }));
});

test('a reclaim secret rides in a welcome and a hello, bounded as in Go', () => {
  const welcome = decode(JSON.stringify({ type: 'welcome', id: 'p1', stream: 's', reclaim: 'r'.repeat(MAX_RECLAIM_LENGTH) }));
  assert.equal(welcome.reclaim.length, MAX_RECLAIM_LENGTH);
  rejects(() => decode(JSON.stringify({ type: 'welcome', id: 'p1', stream: 's', reclaim: 'r'.repeat(MAX_RECLAIM_LENGTH + 1) })));
  const source = { type: 'hello', v: VERSION, role: 'source', kind: 'browser', stream: 's', reclaim: 'abc',
    tracks: [{ id: 'v', kind: 'video', mimeType: 'video/VP8', clockRate: 90000 }] };
  assert.equal(decode(encode(source)).reclaim, 'abc');
  rejects(() => encode({ ...source, reclaim: 'r'.repeat(MAX_RECLAIM_LENGTH + 1) }));
});

test('private mode rides in a viewer hello and a welcome, as in Go', () => {
  assert.equal(encode({ ...hello, private: true }), '{"type":"hello","v":1,"role":"viewer","kind":"browser","stream":"demo","private":true}');
  assert.equal(encode({ ...hello, private: false }), '{"type":"hello","v":1,"role":"viewer","kind":"browser","stream":"demo"}');
  assert.equal(decode('{"type":"welcome","id":"p1","stream":"s","private":true}').private, true);
  rejects(() => encode({ ...hello, role: 'relay', capacity: 2, private: true }));
  rejects(() => decode(JSON.stringify({ ...hello, private: 1 })));
  rejects(() => decode(JSON.stringify({ ...hello, private: 'yes' })));
  assert.equal(Code.UNAVAILABLE, 'unavailable');
});

test('resume fields are checked as Go checks them', () => {
  const hello = { type: 'hello', v: 1, role: 'viewer', kind: 'browser', stream: 'demo' };
  assert.doesNotThrow(() => decode(JSON.stringify({ ...hello, resume: 'r1.demo.p.1.2.mac' })));
  rejects(() => decode(JSON.stringify({ ...hello, resume: 'a b' })));
  rejects(() => decode(JSON.stringify({ ...hello, resume: 'r'.repeat(257) })));
  rejects(() => decode(JSON.stringify({ ...hello, resume: 1 })));
  rejects(() => decode('{"type":"resume"}'));
  rejects(() => decode('{"type":"resume","resume":"x/y"}'));
  rejects(() => decode('{"type":"welcome","id":"a","stream":"s","peer":"p"}')); // a place without resumed
  rejects(() => decode('{"type":"welcome","id":"a","stream":"s","children":["p"]}'));
  rejects(() => decode('{"type":"welcome","id":"a","stream":"s","resumed":true,"children":["a b"]}'));
  rejects(() => decode('{"type":"welcome","id":"a","stream":"s","resumed":true,"held":[1]}'));
  rejects(() => decode('{"type":"welcome","id":"a","stream":"s","grace":-1}'));
});

// The signing fields, with the cases of mesh/protocol/sign_test.go.
const signKey = '11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo';
const signHash = '47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU';
const signSig = '5VZDAMNgrHKQhuLMgG6CioSHfx645dl02HPgZSJJAVVfuIIVkKM7rMYeOXAc-bRr0lv18FlbviRlUUFDjnoQCw';
/** @param {string} evidence */
const tamperedMsg = (evidence) => `{"type":"tampered","peer":"p2","evidence":${evidence}}`;

test('signing fields decode as in Go', () => {
  for (const text of [
    `{"type":"welcome","id":"p1","stream":"demo","sourceKey":"${signKey}"}`,
    `{"type":"parent","peer":"p2","sourceKey":"${signKey}","verify":false}`,
    `{"type":"sourceKey","sourceKey":"${signKey}"}`,
    '{"type":"sourceKey"}',
    `{"type":"sourceKey","sourceKey":"${signKey}","verify":false}`,
    tamperedMsg(`{"track":"v","counter":1099511627776,"hash":"${signHash}","sig":"${signSig}"}`),
    tamperedMsg(`{"track":"a","counter":0,"hash":"${signHash}"}`),
    tamperedMsg(`{"track":"v","counter":5,"hash":"${signHash}","sig":"${signSig}","last":9}`),
  ]) decode(text);
  assert.equal(decode(`{"type":"parent","peer":"p2","verify":false}`).verify, false);
  assert.ok(SERVER_TYPES.has(Type.SOURCE_KEY));
  // What a browser sends: an unsigned frame's evidence drops sig and counter, as omitempty would.
  const sent = JSON.parse(encode({ type: Type.TAMPERED, peer: 'p2', evidence: { track: 'a', counter: 0, hash: signHash, sig: '', last: 0 } }));
  assert.deepEqual(sent, { type: 'tampered', peer: 'p2', evidence: { track: 'a', hash: signHash } });
});

test('signing fields are refused where Go refuses them', () => {
  const good = `{"track":"v","counter":1,"hash":"${signHash}","sig":"${signSig}"}`;
  for (const text of [
    `{"type":"hello","v":1,"role":"viewer","kind":"browser","stream":"demo","signKey":"${signKey}"}`,
    `{"type":"attach","peer":"p2","sourceKey":"${signKey}"}`,
    `{"type":"welcome","id":"p1","stream":"demo","sourceKey":"${'!'.repeat(43)}"}`,
    '{"type":"welcome","id":"p1","stream":"demo","verify":true}',
    `{"type":"stalled","peer":"p2","evidence":${good}}`,
    `{"type":"tampered","evidence":${good}}`,
    '{"type":"tampered","peer":"p2"}',
    tamperedMsg(`{"track":"x","counter":1,"hash":"${signHash}"}`),
    tamperedMsg(`{"track":"v","counter":9007199254740992,"hash":"${signHash}"}`),
    tamperedMsg('{"track":"v","counter":1,"hash":"abc"}'),
    tamperedMsg('{"track":"v","counter":1}'),
    tamperedMsg(`{"track":"v","counter":1,"hash":"${signHash}","sig":"${signSig.slice(0, 80)}"}`),
    tamperedMsg(`{"track":"v","counter":-1,"hash":"${signHash}"}`),
    tamperedMsg(`{"track":"v","counter":1,"hash":"${signHash}","x":1}`),
  ]) rejects(() => decode(text));
});

test('quiet names the parent whose signaling dropped', () => {
  assert.equal(decode('{"type":"quiet","peer":"p4"}').peer, 'p4');
  assert.ok(SERVER_TYPES.has(Type.QUIET));
  assert.equal(decode('{"type":"quiet","peer":"p4","resumed":true}').resumed, true); // its signaling is back
  rejects(() => decode('{"type":"quiet"}'));
  rejects(() => decode('{"type":"quiet","peer":"a b"}'));
});

test('a ping encodes as the exact bytes the server\'s edge answers without decoding', () => {
  assert.equal(encode({ type: Type.PING }), '{"type":"ping"}'); // server/sendq.go, pingFrame
  assert.equal(decode('{"type":"pong"}').type, Type.PONG);
  assert.ok(SERVER_TYPES.has(Type.PONG) && !SERVER_TYPES.has(Type.PING));
});
