// Source-signed frames, the browser side (issue 15; the wire form is the
// Go package mesh/framesig's, written down in the README's "Source-signed
// frames"). The source signs every video and audio frame with the stream's
// Ed25519 key; relays pass the bytes on untouched; a viewer checks each frame
// in its receive transform before the decoder sees it, strips the signature,
// and drops what fails. This module is the pure part: parsing the VP8/Opus
// trailer and the H264 SEI, the canonical hash, the signed message, and the
// per-track counter rules. WebCrypto only (crypto.subtle: SHA-256 and
// Ed25519, in Chromium, Firefox 129+, Safari 17+ and Node), so node --test
// runs it and the relay worker imports it.

/** Bytes the VP8/Opus trailer adds: counter (8), signature (64), version (1), 'C' 'S'. */
export const TRAILER_LEN = 75;
/** The trailer's last three bytes: version 1, then "CS". */
export const TRAILER_MAGIC = Object.freeze([0x01, 0x43, 0x53]);
/** Prefix of every signed message: it ties a signature to this scheme and version. */
export const MESSAGE_PREFIX = 'CNPY1';
/** UUID of the H264 user_data_unregistered SEI that carries a signature: ASCII "canopy.framesig1". */
export const SEI_UUID = Object.freeze([...new TextEncoder().encode('canopy.framesig1')]);
/** payloadSize of that SEI message: uuid (16) + counter (8) + signature (64). */
export const SEI_PAYLOAD_SIZE = 88;
/** Length of an Ed25519 public key and of a signature. */
export const KEY_LEN = 32;
export const SIG_LEN = 64;

/**
 * Stale frames (a counter played already, or older than REORDER_WINDOW)
 * tolerated in a row from a parent that already gave fresh ones: a packet
 * the network duplicated is one; a relay replaying what it sent is many.
 */
export const STALE_RUN_LIMIT = 4;

/**
 * Stale frames tolerated in a row when the run starts with a keyframe: a
 * parent's GOP burst repeated after its own parent switched (its new
 * parent's burst repeats the GOP it had forwarded already). One GOP at
 * most: relays cache up to 300 video frames. With STALE_RUN_LIMIT such a
 * run read as a replay, and the tab dropped every frame until the source's
 * next keyframe (a 2 s freeze for an orphan whose standby parent was
 * switching too) and reported its parent as tampering.
 */
export const BURST_RUN_LIMIT = 300;

/**
 * How far behind the newest frame this tab accepted (from any parent) a new
 * parent's first frame may be, in frames of that track. A new parent starts
 * with its cached GOP, which repeats up to one GOP (10 s at 30 fps in the
 * tests: 300 frames; 500 Opus frames) of what the old parent sent; older
 * than that is a replay, not a burst.
 */
export const REPLAY_WINDOW = 1024;

const enc = new TextEncoder();
const PREFIX = enc.encode(MESSAGE_PREFIX);

/**
 * What a signed frame carries, once parsed.
 * @typedef {object} Signed
 * @property {bigint} counter
 * @property {Uint8Array} sig 64 bytes
 * @property {Uint8Array} canonical the bytes the source hashed
 * @property {Uint8Array} media the frame as the decoder must get it (signature removed)
 */

/**
 * Splits a VP8 or Opus frame into media and trailer.
 * @param {Uint8Array} b the encoded frame
 * @returns {Signed|null} null when it carries no trailer
 */
export function parseTrailer(b) {
  const n = b.length;
  if (n < TRAILER_LEN || b[n - 3] !== TRAILER_MAGIC[0] || b[n - 2] !== TRAILER_MAGIC[1] || b[n - 1] !== TRAILER_MAGIC[2]) return null;
  const at = n - TRAILER_LEN;
  const counter = new DataView(b.buffer, b.byteOffset + at, 8).getBigUint64(0);
  const media = b.subarray(0, at);
  return { counter, sig: b.subarray(at + 8, at + 8 + SIG_LEN), canonical: media, media };
}

/**
 * One NAL unit of an Annex-B access unit: where its start code begins, and
 * the NAL's own bytes (header included, trailing zero bytes excluded).
 * @typedef {{from: number, to: number, nal: Uint8Array}} Nal
 */

/**
 * Splits an Annex-B access unit into NAL units. Zero bytes before a start
 * code (the 4-byte form's, trailing_zero_8bits) belong to no NAL: a NAL
 * never ends in 0x00, so the hash does not depend on 3- or 4-byte codes.
 * @param {Uint8Array} b
 * @returns {Nal[]} in order; [] when b has no start code
 */
export function splitAnnexB(b) {
  /** @type {Nal[]} */
  const out = [];
  let start = -1; // first byte of the current NAL
  let from = -1; // first byte of its start code
  let zeros = 0;
  const close = (/** @type {number} */ end, /** @type {number} */ next) => {
    if (start < 0) return;
    let e = end;
    while (e > start && b[e - 1] === 0) e--;
    if (e > start) out.push({ from, to: next, nal: b.subarray(start, e) });
  };
  for (let i = 0; i < b.length; i++) {
    const x = b[i];
    if (x === 0) {
      zeros++;
      continue;
    }
    if (x === 1 && zeros >= 2) {
      const codeAt = i - Math.min(zeros, 3);
      close(i - zeros, codeAt);
      from = codeAt;
      start = i + 1;
    }
    zeros = 0;
  }
  close(b.length, b.length);
  return out;
}

/**
 * Removes emulation prevention bytes (00 00 03 → 00 00).
 * @param {Uint8Array} b
 * @returns {Uint8Array}
 */
export function unescapeRBSP(b) {
  const out = new Uint8Array(b.length);
  let n = 0;
  let zeros = 0;
  for (let i = 0; i < b.length; i++) {
    const x = b[i];
    if (zeros >= 2 && x === 3) {
      zeros = 0;
      continue;
    }
    zeros = x === 0 ? zeros + 1 : 0;
    out[n++] = x;
  }
  return out.subarray(0, n);
}

/**
 * The counter and signature of a Canopy signature SEI, or null when nal is
 * another NAL unit (another SEI included).
 * @param {Uint8Array} nal with its header byte
 * @returns {{counter: bigint, sig: Uint8Array}|null}
 */
export function parseSignatureSEI(nal) {
  if (nal.length < 2 + SEI_PAYLOAD_SIZE || (nal[0] & 0x1f) !== 6) return null;
  const p = unescapeRBSP(nal.subarray(1));
  if (p.length < 2 + SEI_PAYLOAD_SIZE || p[0] !== 5 || p[1] !== SEI_PAYLOAD_SIZE) return null;
  for (let i = 0; i < SEI_UUID.length; i++) if (p[2 + i] !== SEI_UUID[i]) return null;
  const at = 2 + SEI_UUID.length;
  const counter = new DataView(p.buffer, p.byteOffset + at, 8).getBigUint64(0);
  return { counter, sig: p.slice(at + 8, at + 8 + SIG_LEN) };
}

/** NAL types left out of the canonical form: AUD (9) and filler (12), which packetizers may drop. */
const UNHASHED_NALS = new Set([9, 12]);

/**
 * Parses an H264 access unit: the signature SEI, the canonical form (every
 * other NAL but AUD and filler, each as u32 BE length || bytes), and the
 * access unit without the SEI for the decoder.
 * @param {Uint8Array} b Annex-B, as RTCEncodedVideoFrame.data holds it
 * @returns {Signed|null} null when it carries no signature SEI
 */
export function parseH264(b) {
  const nals = splitAnnexB(b);
  /** @type {{counter: bigint, sig: Uint8Array}|null} */
  let found = null;
  /** @type {Nal|null} */
  let sei = null;
  let size = 0;
  for (const n of nals) {
    if (!found) {
      const s = parseSignatureSEI(n.nal);
      if (s) {
        found = s;
        sei = n;
        continue;
      }
    }
    if (!UNHASHED_NALS.has(n.nal[0] & 0x1f)) size += 4 + n.nal.length;
  }
  if (!found || !sei) return null;
  const canonical = new Uint8Array(size);
  const dv = new DataView(canonical.buffer);
  let at = 0;
  for (const n of nals) {
    if (n === sei || UNHASHED_NALS.has(n.nal[0] & 0x1f)) continue;
    dv.setUint32(at, n.nal.length);
    canonical.set(n.nal, at + 4);
    at += 4 + n.nal.length;
  }
  const media = new Uint8Array(b.length - (sei.to - sei.from));
  media.set(b.subarray(0, sei.from));
  media.set(b.subarray(sei.to), sei.from);
  return { counter: found.counter, sig: found.sig, canonical, media };
}

/**
 * Parses a frame of a signed track.
 * @param {Uint8Array} data the encoded frame
 * @param {boolean} h264 whether the track is H264 (else VP8 or Opus: the trailer)
 * @returns {Signed|null}
 */
export function parseSigned(data, h264) {
  return h264 ? parseH264(data) : parseTrailer(data);
}

/**
 * The bytes the source signs: "CNPY1" || kind || counter (u64 BE) || hash.
 * @param {'v'|'a'} kind
 * @param {bigint} counter
 * @param {Uint8Array} hash SHA-256 of the canonical bytes
 * @returns {Uint8Array} 46 bytes
 */
export function message(kind, counter, hash) {
  const m = new Uint8Array(PREFIX.length + 1 + 8 + 32);
  m.set(PREFIX);
  m[PREFIX.length] = kind.charCodeAt(0);
  new DataView(m.buffer).setBigUint64(PREFIX.length + 1, counter);
  m.set(hash, PREFIX.length + 9);
  return m;
}

/** @param {Uint8Array} b @returns {string} base64url without padding */
export function b64url(b) {
  let s = '';
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** @param {string} s base64url, padded or not @returns {Uint8Array} */
export function fromB64url(s) {
  const bin = atob(s.replace(/-/g, '+').replace(/_/g, '/'));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/**
 * Imports a stream's public key (the welcome's sourceKey).
 * @param {string} key base64url of 32 bytes
 * @returns {Promise<CryptoKey>}
 * @throws when the key is malformed or the browser has no Ed25519
 */
export async function importKey(key) {
  const raw = fromB64url(key);
  if (raw.length !== KEY_LEN) throw new Error(`framesig: a key is ${KEY_LEN} bytes, got ${raw.length}`);
  return crypto.subtle.importKey('raw', /** @type {BufferSource} */ (raw), { name: 'Ed25519' }, false, ['verify']);
}

/**
 * What a viewer sends the server about a frame that failed: enough for the
 * server to check the claim against the key without the frame.
 * @typedef {object} Evidence
 * @property {'v'|'a'} track
 * @property {number} counter 0 when the frame carried none
 * @property {string} hash b64url SHA-256 of the canonical bytes as received
 * @property {string} sig b64url of the signature as received ('' when none)
 * @property {number} last the counter of the last frame accepted from this parent (0: none): a
 *   replayed frame's signature verifies, and this shows the server it came again
 */

/**
 * The verdict on one frame.
 * @typedef {object} Verdict
 * @property {'ok'|'stale'|'bad'} result ok: play media; stale: drop quietly; bad: drop, tampering
 * @property {Uint8Array} [media] ok: the frame without its signature
 * @property {bigint} [counter]
 * @property {Evidence} [evidence] bad: what to report
 * @property {string} [why] bad: 'unsigned', 'signature', 'replay'
 */

/** @param {Uint8Array} b @returns {Promise<Uint8Array>} */
async function sha256(b) {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', /** @type {BufferSource} */ (b)));
}

/**
 * Checks one frame's signature against key. Counters are the caller's
 * (Counters below): this is the crypto only.
 * @param {CryptoKey} key
 * @param {'v'|'a'} kind
 * @param {Uint8Array} data the encoded frame as received
 * @param {boolean} h264
 * @returns {Promise<{ok: boolean, signed: Signed|null, hash: Uint8Array}>}
 */
export async function checkFrame(key, kind, data, h264) {
  const signed = parseSigned(data, h264);
  if (!signed) return { ok: false, signed: null, hash: await sha256(data) };
  const hash = await sha256(signed.canonical);
  const ok = await crypto.subtle.verify({ name: 'Ed25519' }, key, /** @type {BufferSource} */ (signed.sig),
    /** @type {BufferSource} */ (message(kind, signed.counter, hash)));
  return { ok, signed, hash };
}

/**
 * How far below the newest counter a parent gave a frame may come and still
 * play, once: a frame a NACK repaired. The browser hands the transform each
 * frame when its last packet arrives, before it puts frames back in order
 * (libwebrtc's OnAssembledFrame), so a frame whose packets were lost comes
 * after the ones sent behind it, and the decoder needs it: they reference
 * it. Read as stale, a loss burst over 5 frames was a "replay" and the tab
 * reported an honest parent (TestFirefoxVerifiesSignedFrames in CI, under
 * load). 128 frames: 4 s of 30 fps video, 2.5 s of Opus, past any repair.
 */
export const REORDER_WINDOW = 128;
const WINDOW_MASK = (1n << BigInt(REORDER_WINDOW)) - 1n;

/**
 * The counter rules of one track for one parent connection (one decoder):
 * each counter plays once. A frame above the newest accepted plays; one
 * below it plays if it is within REORDER_WINDOW and was not played (a late
 * repair). A new parent's first frames may repeat what the last one sent
 * (its cached GOP) and are dropped quietly; once it gave a fresh frame,
 * more than STALE_RUN_LIMIT stale ones in a row (repeated, or older than
 * the window) is a replay.
 */
export class Counters {
  /** @param {{high: bigint|null}} shared the newest counter accepted on this track over every parent */
  constructor(shared) {
    this._shared = shared;
    /** @type {bigint|null} */
    this.last = null;
    /** Bit i set: counter last - i was accepted (i < REORDER_WINDOW). */
    this._seen = 0n;
    this._staleRun = 0;
    this._burst = false;
  }

  /**
   * @param {bigint} counter of a frame whose signature verified
   * @param {boolean} [key] whether it is a video keyframe (a stale run that starts with one is a burst)
   * @returns {'ok'|'stale'|'replay'}
   */
  check(counter, key = false) {
    const high = this._shared.high;
    const last = this.last;
    if (last === null) {
      if (high !== null && counter + BigInt(REPLAY_WINDOW) <= high) return 'stale';
      this.last = counter;
      this._seen = 1n;
    } else if (counter > last) {
      const shift = counter - last;
      this._seen = shift >= BigInt(REORDER_WINDOW) ? 1n : ((this._seen << shift) | 1n) & WINDOW_MASK;
      this.last = counter;
    } else {
      const behind = last - counter;
      if (behind >= BigInt(REORDER_WINDOW) || (this._seen & (1n << behind)) !== 0n) {
        if (this._staleRun === 0) this._burst = key;
        return ++this._staleRun > (this._burst ? BURST_RUN_LIMIT : STALE_RUN_LIMIT) ? 'replay' : 'stale';
      }
      this._seen |= 1n << behind; // a late repair: it neither starts nor ends a stale run
      return 'ok';
    }
    this._staleRun = 0;
    this._burst = false;
    if (high === null || counter > high) this._shared.high = counter;
    return 'ok';
  }
}

/**
 * A counter as evidence carries it: exact below 2^53 (a source's counters
 * start below 2^40), else 2^53 - 1. Only a forger's frame has a larger one,
 * and its signature fails over either number.
 * @param {bigint} c
 * @returns {number}
 */
export function evidenceCounter(c) {
  return c > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(c);
}

/**
 * Judges one frame whose crypto was checked (checkFrame): signature, then
 * counter. Call it in the order frames arrived: the counter rules depend on it.
 * @param {Counters} counters this track's, for this parent
 * @param {'v'|'a'} kind
 * @param {{ok: boolean, signed: Signed|null, hash: Uint8Array}} checked
 * @param {boolean} [key] whether the frame is a video keyframe
 * @returns {Verdict}
 */
export function decide(counters, kind, checked, key = false) {
  const { ok, signed, hash } = checked;
  /** @param {string} why @returns {Verdict} */
  const bad = (why) => ({
    result: 'bad', why, counter: signed?.counter,
    evidence: {
      track: kind, counter: signed ? evidenceCounter(signed.counter) : 0, hash: b64url(hash), sig: signed ? b64url(signed.sig) : '',
      last: counters.last === null ? 0 : evidenceCounter(counters.last),
    },
  });
  if (!signed) return bad('unsigned');
  if (!ok) return bad('signature');
  const c = counters.check(signed.counter, key);
  if (c === 'replay') return bad('replay');
  if (c === 'stale') return { result: 'stale', counter: signed.counter };
  return { result: 'ok', media: signed.media, counter: signed.counter };
}
