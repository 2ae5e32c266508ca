// Tests of source-signed frames, the browser side: the trailer and SEI
// parsers, the canonical hash, the signed message, the counter rules and the
// ordered verifier, with frames signed here by Node's own Ed25519 (WebCrypto)
// the way the Go source signs them; and the vectors the Go package wrote
// (mesh/framesig/testdata), so both sides agree byte for byte.
// Run with: node --test static/test/

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import {
  BURST_RUN_LIMIT, Counters, REORDER_WINDOW, REPLAY_WINDOW, SEI_UUID, STALE_RUN_LIMIT, TRAILER_LEN, b64url, checkFrame, decide, fromB64url,
  importKey, message, parseH264, parseTrailer, splitAnnexB, unescapeRBSP,
} from '../js/framesig.js';
import { TrackVerifier } from '../js/framesig-track.js';

/** A source's key pair, as Go's crypto/ed25519 makes one. */
async function keyPair() {
  const k = /** @type {CryptoKeyPair} */ (await crypto.subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify']));
  const raw = new Uint8Array(await crypto.subtle.exportKey('raw', k.publicKey));
  return { priv: k.privateKey, pub: b64url(raw), key: await importKey(b64url(raw)) };
}

/** @param {Uint8Array} b */
const sha = async (b) => new Uint8Array(await crypto.subtle.digest('SHA-256', b));

/** @param {CryptoKey} priv @param {'v'|'a'} kind @param {bigint} counter @param {Uint8Array} canonical */
async function sign(priv, kind, counter, canonical) {
  return new Uint8Array(await crypto.subtle.sign({ name: 'Ed25519' }, priv, message(kind, counter, await sha(canonical))));
}

/** @param {bigint} c */
function u64(c) {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, c);
  return b;
}

/** @param {...(Uint8Array|number[])} parts */
function cat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A VP8 or Opus frame with its trailer. @param {CryptoKey} priv @param {'v'|'a'} kind @param {bigint} counter @param {Uint8Array} media */
async function trailed(priv, kind, counter, media) {
  return cat(media, u64(counter), await sign(priv, kind, counter, media), [1, 0x43, 0x53]);
}

/** Emulation prevention, as an encoder applies it. @param {Uint8Array} b */
function escape(b) {
  const out = [];
  let zeros = 0;
  for (const x of b) {
    if (zeros >= 2 && x <= 3) {
      out.push(3);
      zeros = 0;
    }
    out.push(x);
    zeros = x === 0 ? zeros + 1 : 0;
  }
  return new Uint8Array(out);
}

/** The canonical form of NALs: u32 BE length || bytes each. @param {Uint8Array[]} nals */
function canonicalOf(nals) {
  return cat(...nals.filter((n) => ![9, 12].includes(n[0] & 0x1f)).flatMap((n) => {
    const len = new Uint8Array(4);
    new DataView(len.buffer).setUint32(0, n.length);
    return [len, n];
  }));
}

/**
 * An H264 access unit with the signature SEI before its first VCL NAL.
 * @param {CryptoKey} priv @param {bigint} counter @param {Uint8Array[]} nals @param {number[]} code start code
 */
async function signedAU(priv, counter, nals, code = [0, 0, 0, 1]) {
  const sig = await sign(priv, 'v', counter, canonicalOf(nals));
  const sei = cat([6], escape(cat([5, 88], SEI_UUID, u64(counter), sig, [0x80])));
  const firstVCL = nals.findIndex((n) => { const t = n[0] & 0x1f; return t >= 1 && t <= 5; });
  const all = [...nals.slice(0, firstVCL), sei, ...nals.slice(firstVCL)];
  return cat(...all.flatMap((n) => [code, n]));
}

const sps = new Uint8Array([0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8]);
const pps = new Uint8Array([0x68, 0xce, 0x3c, 0x80]);
const aud = new Uint8Array([0x09, 0xf0]);
/** An IDR slice whose bytes need emulation prevention, kept as the encoder escaped them. */
const idr = new Uint8Array([0x65, 0x88, 0x84, 0x00, 0x00, 0x03, 0x01, 0x00, 0x00, 0x03, 0x00, 0xaa, 0x00]);
const idrTrimmed = idr.subarray(0, idr.length - 1); // a NAL never ends in 0x00: that byte is a trailing zero

test('parseTrailer splits media, counter and signature', async () => {
  const { priv, key } = await keyPair();
  const media = new Uint8Array([0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 1, 2, 3]);
  const f = await trailed(priv, 'v', 123456789n, media);
  assert.equal(f.length, media.length + TRAILER_LEN);
  const p = parseTrailer(f);
  assert.ok(p);
  assert.equal(p.counter, 123456789n);
  assert.deepEqual([...p.media], [...media]);
  const c = await checkFrame(key, 'v', f, false);
  assert.equal(c.ok, true);
  // The same frame as audio: the kind byte is signed, so it fails.
  assert.equal((await checkFrame(key, 'a', f, false)).ok, false);
});

test('parseTrailer refuses frames without the trailer', () => {
  assert.equal(parseTrailer(new Uint8Array(74).fill(1)), null);
  const f = new Uint8Array(100);
  f.set([1, 0x43, 0x53], 97);
  assert.ok(parseTrailer(f));
  f[99] = 0x54;
  assert.equal(parseTrailer(f), null);
  assert.equal(parseTrailer(new Uint8Array([1, 0x43, 0x53])), null, 'shorter than a trailer');
});

test('a flipped bit anywhere in a trailed frame fails', async () => {
  const { priv, key } = await keyPair();
  const f = await trailed(priv, 'a', 7n, new Uint8Array([0xfc, 0xff, 0xfe, 0x11, 0x22, 0x33]));
  for (let i = 0; i < f.length - 3; i += 5) {
    const g = f.slice();
    g[i] ^= 0x04;
    assert.equal((await checkFrame(key, 'a', g, false)).ok, false, `bit flipped at byte ${i}`);
  }
});

test('splitAnnexB finds NALs behind 3- and 4-byte start codes, without trailing zeros', () => {
  const au = cat([0, 0, 0, 1], sps, [0, 0, 1], pps, [0, 0, 0, 1], idr, [0, 0], [0, 0, 1], aud);
  const nals = splitAnnexB(au);
  assert.deepEqual(nals.map((n) => [...n.nal]), [[...sps], [...pps], [...idrTrimmed], [...aud]]);
  assert.equal(nals[0].from, 0);
  assert.equal(nals[1].from, 4 + sps.length);
  assert.deepEqual(splitAnnexB(new Uint8Array([1, 2, 3])), []);
});

test('unescapeRBSP drops emulation prevention bytes only', () => {
  assert.deepEqual([...unescapeRBSP(new Uint8Array([0, 0, 3, 1, 0, 0, 3, 0, 3, 0, 3]))], [0, 0, 1, 0, 0, 0, 3, 0, 3]);
});

test('parseH264 verifies whatever the start codes, and strips only the SEI', async () => {
  const { priv, key } = await keyPair();
  for (const code of [[0, 0, 0, 1], [0, 0, 1]]) {
    const au = await signedAU(priv, 0xdeadbeefn, [aud, sps, pps, idrTrimmed], code);
    const p = parseH264(au);
    assert.ok(p, 'finds the SEI');
    assert.equal(p.counter, 0xdeadbeefn);
    assert.deepEqual([...p.canonical], [...canonicalOf([sps, pps, idrTrimmed])], 'AUD and the SEI are not hashed');
    assert.deepEqual([...p.media], [...cat(...[aud, sps, pps, idrTrimmed].flatMap((n) => [code, n]))], 'the SEI and its start code are gone');
    assert.equal((await checkFrame(key, 'v', au, true)).ok, true);
  }
  // Packetizers may drop the AUD: still verifies. Re-coding 3-byte start codes as 4: still verifies.
  const au = await signedAU(priv, 5n, [aud, sps, pps, idrTrimmed], [0, 0, 1]);
  const nals = splitAnnexB(au).map((n) => n.nal).filter((n) => (n[0] & 0x1f) !== 9);
  assert.equal((await checkFrame(key, 'v', cat(...nals.flatMap((n) => [[0, 0, 0, 1], n])), true)).ok, true);
  // A changed slice byte, or a dropped SPS, fails.
  const slice = au.slice();
  slice[slice.length - 2] ^= 1;
  assert.equal((await checkFrame(key, 'v', slice, true)).ok, false);
  const noSPS = cat(...splitAnnexB(au).map((n) => n.nal).filter((n) => (n[0] & 0x1f) !== 7).flatMap((n) => [[0, 0, 1], n]));
  assert.equal((await checkFrame(key, 'v', noSPS, true)).ok, false);
});

test('an H264 access unit without the SEI, or with another SEI, is unsigned', async () => {
  const plain = cat([0, 0, 0, 1], sps, [0, 0, 0, 1], idrTrimmed);
  assert.equal(parseH264(plain), null);
  const otherSEI = cat([0, 0, 0, 1], [6, 5, 16], new Uint8Array(16).fill(7), [0x80], [0, 0, 0, 1], idrTrimmed);
  assert.equal(parseH264(otherSEI), null);
  const { key } = await keyPair();
  const c = await checkFrame(key, 'v', plain, true);
  assert.equal(c.ok, false);
  assert.equal(c.signed, null);
});

test('Counters: strictly rising, a new parent\'s burst is quiet, a replay is not', () => {
  const shared = { high: null };
  const a = new Counters(shared);
  for (let c = 100n; c < 110n; c++) assert.equal(a.check(c), 'ok');
  // The new parent's cached GOP repeats 104..109, then goes on.
  const b = new Counters(shared);
  for (let c = 104n; c < 110n; c++) assert.equal(b.check(c), 'ok', 'a new decoder needs the GOP it starts with');
  assert.equal(b.check(110n), 'ok');
  // Once fresh frames came, a few stale ones are tolerated, more are a replay.
  for (let i = 0; i < STALE_RUN_LIMIT; i++) assert.equal(b.check(105n), 'stale');
  assert.equal(b.check(105n), 'replay');
  assert.equal(b.check(111n), 'ok', 'a fresh frame resets the run');
  // A new parent that starts far behind the newest frame replays.
  const c = new Counters(shared);
  assert.equal(c.check(111n - BigInt(REPLAY_WINDOW)), 'stale');
  assert.equal(c.check(112n), 'ok');
});

test('Counters: a parent repeating its GOP after its own switch is a burst, up to a GOP', () => {
  const a = new Counters({ high: null });
  for (let c = 100n; c < 160n; c++) assert.equal(a.check(c, c === 100n), 'ok');
  // The parent's new parent bursts the same GOP (keyframe 100 first): quiet, then it goes on.
  for (let c = 100n; c < 160n; c++) assert.equal(a.check(c, c === 100n), 'stale', `repeated ${c}`);
  assert.equal(a.check(160n), 'ok');
  // A run that starts with a delta is a replay past STALE_RUN_LIMIT, as before.
  for (let i = 0; i < STALE_RUN_LIMIT; i++) assert.equal(a.check(150n), 'stale');
  assert.equal(a.check(150n), 'replay');
  // A keyframe-led run longer than any GOP a relay caches is a replay too.
  const b = new Counters({ high: null });
  b.check(1000n);
  assert.equal(b.check(1n, true), 'stale');
  for (let i = 1; i < BURST_RUN_LIMIT; i++) assert.equal(b.check(1n), 'stale');
  assert.equal(b.check(1n), 'replay');
});

test('Counters: frames a NACK repaired play late, once; older ones or repeats are stale', () => {
  const a = new Counters({ high: null });
  assert.equal(a.check(100n, true), 'ok');
  // 101..106 lost, 107 and 108 came; the repairs follow (libwebrtc hands
  // the transform frames as they complete): more than STALE_RUN_LIMIT late
  // frames in a row, each played once, none a replay.
  assert.equal(a.check(107n), 'ok');
  assert.equal(a.check(108n), 'ok');
  for (let c = 101n; c <= 106n; c++) assert.equal(a.check(c), 'ok', `repaired ${c}`);
  for (let i = 0; i < STALE_RUN_LIMIT; i++) assert.equal(a.check(103n), 'stale', 'a repeat of a late frame');
  assert.equal(a.check(103n), 'replay');
  // A late frame neither ends a run of repeats nor starts one.
  const b = new Counters({ high: null });
  b.check(500n);
  b.check(510n);
  for (let i = 0; i < STALE_RUN_LIMIT; i++) assert.equal(b.check(510n), 'stale');
  assert.equal(b.check(505n), 'ok');
  assert.equal(b.check(510n), 'replay');
  // Only within the window: older than it is stale, played or not.
  const c = new Counters({ high: null });
  c.check(1000n);
  c.check(1000n + BigInt(REORDER_WINDOW));
  assert.equal(c.check(1001n), 'ok', 'the oldest the window holds');
  assert.equal(c.check(1000n), 'stale', 'at the window\'s edge, played');
  assert.equal(c.check(999n), 'stale', 'past it');
  // A jump past the window forgets what was played below it; far below is stale at once.
  const d = new Counters({ high: null });
  d.check(10n);
  d.check(10n + 10n * BigInt(REORDER_WINDOW));
  assert.equal(d.check(11n), 'stale');
  assert.equal(d.check(0n), 'stale');
});

test('decide: unsigned, forged and replayed frames carry evidence', async () => {
  const { priv, key } = await keyPair();
  const media = new Uint8Array([1, 2, 3, 4]);
  const good = await trailed(priv, 'v', 50n, media);
  const counters = new Counters({ high: null });
  const ok = decide(counters, 'v', await checkFrame(key, 'v', good, false));
  assert.equal(ok.result, 'ok');
  const forged = good.slice();
  forged[0] ^= 0x80;
  const bad = decide(counters, 'v', await checkFrame(key, 'v', forged, false));
  assert.equal(bad.result, 'bad');
  assert.equal(bad.why, 'signature');
  assert.deepEqual(bad.evidence, {
    track: 'v', counter: 50, hash: b64url(await sha(forged.subarray(0, 4))), sig: b64url(good.subarray(4 + 8, 4 + 72)), last: 50,
  });
  // A replay's evidence verifies; last shows it came after a newer frame.
  const later = await trailed(priv, 'v', 51n, media);
  assert.equal(decide(counters, 'v', await checkFrame(key, 'v', later, false)).result, 'ok');
  /** @type {import('../js/framesig.js').Verdict|undefined} */
  let replay;
  for (let i = 0; i <= STALE_RUN_LIMIT; i++) replay = decide(counters, 'v', await checkFrame(key, 'v', good, false));
  assert.equal(replay?.why, 'replay');
  assert.equal(replay?.evidence?.counter, 50);
  assert.equal(replay?.evidence?.last, 51);
  const unsigned = decide(counters, 'v', await checkFrame(key, 'v', media, false));
  assert.equal(unsigned.why, 'unsigned');
  assert.equal(unsigned.evidence?.sig, '');
  assert.equal(unsigned.evidence?.hash, b64url(await sha(media)));
});

test('TrackVerifier keeps order across async checks, strips, and waits for a keyframe after a forgery', async () => {
  const { priv, key } = await keyPair();
  /** @type {{data: ArrayBuffer, type: string, n: number}[]} */
  const out = [];
  /** @type {import('../js/framesig.js').Verdict[]} */
  const bad = [];
  const v = new TrackVerifier({ kind: 'v', h264: false, key, shared: { high: null }, deliver: (f) => out.push(f), onBad: (x) => bad.push(x) });
  const frames = [];
  for (let i = 0; i < 40; i++) {
    // Sizes vary so the checks finish in another order than they started.
    const media = new Uint8Array(i % 3 === 0 ? 60000 : 10).fill(i);
    const data = await trailed(priv, 'v', 1000n + BigInt(i), media);
    if (i === 20) data[3] ^= 1; // forged
    frames.push({ data: /** @type {ArrayBuffer} */ (data.buffer), type: i % 10 === 0 ? 'key' : 'delta', n: i });
  }
  for (const f of frames) await v.push(f);
  await v.drain();
  const got = out.map((f) => f.n);
  const want = [...Array(20).keys(), 30, 31, 32, 33, 34, 35, 36, 37, 38, 39];
  assert.deepEqual(got, want, 'in order; 20 dropped; 21..29 held until the keyframe at 30');
  for (const f of out) assert.equal(new Uint8Array(f.data)[0], f.n, 'media, not the trailer');
  assert.equal(out[1].data.byteLength, 10, 'the trailer is stripped');
  assert.deepEqual(v.counts, { verified: 30, rejected: 1, stale: 0, held: 9, unverified: 0 });
  assert.equal(bad.length, 1);
  assert.equal(bad[0].evidence?.counter, 1020);
});

test('TrackVerifier without a key delivers everything unchecked', async () => {
  const out = [];
  const v = new TrackVerifier({ kind: 'a', h264: false, key: null, shared: { high: null }, deliver: (f) => out.push(f) });
  for (let i = 0; i < 5; i++) v.push({ data: new Uint8Array([i]).buffer });
  await v.drain();
  assert.equal(out.length, 5);
  assert.equal(v.counts.unverified, 5);
});

// Vectors the Go package wrote with its own signer (mesh/framesig's
// TestWriteVectors): the browser must accept every "ok" frame and reject the
// others, and strip each to the media Go says the decoder gets.
const goVectors = new URL('../../mesh/framesig/testdata/vectors.json', import.meta.url);
test('vectors signed by the Go package verify here', async () => {
  const doc = JSON.parse(readFileSync(goVectors, 'utf8'));
  const key = await importKey(doc.key);
  assert.ok(doc.frames.length >= 6);
  for (const f of doc.frames) {
    const data = fromB64url(f.frame);
    const h264 = f.codec === 'H264';
    const c = await checkFrame(key, f.kind, data, h264);
    assert.equal(c.ok, f.valid, `${f.name}: verified ${c.ok}, Go says ${f.valid}`);
    if (f.valid) {
      assert.equal(c.signed?.counter, BigInt(f.counter), f.name);
      assert.equal(b64url(c.hash), f.hash, `${f.name}: canonical hash`);
      const media = /** @type {Uint8Array} */ (c.signed?.media);
      if (f.media) assert.equal(b64url(media), f.media, `${f.name}: stripped media`);
      if (h264) {
        // Stripped: no signature left, every other NAL still there.
        assert.equal(parseH264(media), null, `${f.name}: the SEI is gone`);
        assert.equal(b64url(await sha(canonicalOf(splitAnnexB(media).map((n) => n.nal)))), f.hash, `${f.name}: the rest is intact`);
      }
    }
  }
});

test('TrackVerifier on an unverifiable path plays everything, stripping valid signatures only', async () => {
  const { priv, key } = await keyPair();
  /** @type {Uint8Array[]} */
  const out = [];
  const bad = [];
  const v = new TrackVerifier({ kind: 'a', h264: false, key, required: false, shared: { high: null },
    deliver: (f) => out.push(new Uint8Array(f.data)), onBad: (x) => bad.push(x) });
  const media = new Uint8Array([9, 8, 7]);
  const signed = await trailed(priv, 'a', 3n, media);
  const forged = signed.slice();
  forged[1] ^= 1;
  for (const d of [signed, media, forged]) v.push({ data: /** @type {ArrayBuffer} */ (d.slice().buffer) });
  await v.drain();
  assert.deepEqual(out.map((b) => [...b]), [[...media], [...media], [...forged]], 'stripped, as is, as is');
  assert.equal(bad.length, 0);
  assert.equal(v.counts.unverified, 3);
  assert.equal(v.checks, false);
});

test('TrackVerifier: unsigned frames just after the path became verifiable are not reported', async () => {
  const { priv, key } = await keyPair();
  let now = 0;
  const bad = [];
  const out = [];
  const v = new TrackVerifier({ kind: 'v', h264: false, key, required: false, shared: { high: null },
    deliver: (f) => out.push(f), onBad: (x) => bad.push(x), now: () => now });
  v.setKey(key, true);
  assert.equal(v.checks, true);
  const unsigned = new Uint8Array([1, 2, 3]);
  v.push({ data: unsigned.slice().buffer, type: 'delta' });
  await v.drain();
  assert.equal(bad.length, 0, 'in flight when the path changed');
  assert.equal(v.counts.stale, 1);
  v.push({ data: (await trailed(priv, 'v', 10n, unsigned)).buffer, type: 'key' });
  await v.drain();
  assert.equal(out.length, 1);
  now = 2001;
  v.push({ data: unsigned.slice().buffer, type: 'delta' });
  await v.drain();
  assert.equal(bad.length, 1, 'past the grace an unsigned frame is tampering');
});

test('a forger\'s counter beyond 2^53 still makes evidence the protocol accepts', async () => {
  const { priv, key } = await keyPair();
  const { encode } = await import('../js/protocol.js');
  const f = await trailed(priv, 'v', 0xfedcba9876543210n, new Uint8Array([1, 2, 3]));
  f[0] ^= 1;
  const v = decide(new Counters({ high: null }), 'v', await checkFrame(key, 'v', f, false));
  assert.equal(v.why, 'signature');
  assert.equal(v.evidence?.counter, Number.MAX_SAFE_INTEGER);
  const e = /** @type {import('../js/framesig.js').Evidence} */ (v.evidence);
  encode({ type: 'tampered', peer: 'p2', evidence: { ...e } });
});

test('cannotVerify: only a running receive worker checks and strips', async () => {
  const { cannotVerify, FrameChecks } = await import('../js/framesig-client.js');
  assert.equal(cannotVerify(null), true, 'no transform');
  assert.equal(cannotVerify(undefined), true);
  assert.equal(cannotVerify({ ready: false }), true, 'a worker that did not start (in time)');
  assert.equal(cannotVerify({ ready: true }), false);
  // A worker that starts after the hello said noVerify: still "no transform".
  const fc = new FrameChecks(null, () => {});
  fc.setKey('A'.repeat(43));
  fc.declaredNoVerify = true;
  assert.equal((await fc.sample(null, 0)).unverifiedWhy, 'no transform');
  const unsigned = new FrameChecks(null, () => {});
  assert.equal((await unsigned.sample(null, 0)).unverifiedWhy, 'unsigned stream');
});

test('TrackVerifier: the old source\'s frames just after the key changed are dropped, not reported', async () => {
  const old = await keyPair();
  const next = await keyPair();
  let now = 0;
  const bad = [];
  const out = [];
  const v = new TrackVerifier({ kind: 'v', h264: false, key: old.key, shared: { high: null },
    deliver: (f) => out.push(f), onBad: (x) => bad.push(x), now: () => now });
  const media = new Uint8Array([4, 5, 6]);
  v.setKey(next.key); // the source came back with a new key
  v.push({ data: (await trailed(old.priv, 'v', 7n, media)).buffer, type: 'key' });
  await v.drain();
  assert.equal(bad.length, 0, 'in flight when the key changed');
  assert.equal(v.counts.rejected, 1, 'not played either');
  assert.equal(out.length, 0);
  v.push({ data: (await trailed(next.priv, 'v', 1n, media)).buffer, type: 'key' });
  await v.drain();
  assert.equal(out.length, 1, 'the new source plays');
  now = 2001;
  v.push({ data: (await trailed(old.priv, 'v', 8n, media)).buffer, type: 'key' });
  await v.drain();
  assert.equal(bad.length, 1, 'past the grace an old key\'s frame is tampering');
  // Setting the same key again (a path change) starts no grace.
  v.setKey(next.key);
  v.push({ data: (await trailed(old.priv, 'v', 9n, media)).buffer, type: 'key' });
  await v.drain();
  assert.equal(bad.length, 2);
});
