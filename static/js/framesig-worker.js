// The signed-frames part of the receive worker (relay-worker.js imports it):
// one TrackVerifier per upstream receiver, the stream's key imported once,
// keyframe requests after a rejected video frame, and the tampering reports
// the page turns into a protocol message. Runs in a worker scope (WebCrypto
// is there too); relay-worker.js hands it each frame after forwarding the
// original bytes to its children.

import { importKey } from './framesig.js';
import { TrackVerifier } from './framesig-track.js';

/** @typedef {import('./framesig.js').Verdict} Verdict */
/** @typedef {import('./framesig-track.js').TrackCounts} TrackCounts */

/**
 * Keyframe requests after rejected video frames go upstream at most once
 * per this many ms per upstream: a tampering parent may forge every frame.
 */
export const REJECT_KEYFRAME_GAP_MS = 300;

/**
 * How a receiver's frames are to be checked, as the page passes it in the
 * transform's options.
 * @typedef {object} VerifyOptions
 * @property {string|null} key the stream's public key (base64url), or null: deliver unchecked
 * @property {boolean} h264 whether the video track is H264 (its signature is an SEI, not a trailer)
 * @property {boolean} [required] false on a path that cannot be verified (a re-encoding hop
 *   above): frames play unchecked, stripped of a signature that verifies (true by default)
 */

/**
 * @typedef {object} Upstream
 * @property {Map<string, TrackVerifier<any>>} tracks by kind
 * @property {{sendKeyFrameRequest(): Promise<void>}|null} video its video transformer, for keyframe requests
 * @property {number} lastKeyRequest ms
 * @property {boolean} tampered whether any of its frames failed
 */

/** @returns {TrackCounts} */
function zero() {
  return { verified: 0, rejected: 0, stale: 0, held: 0, unverified: 0 };
}

/** Adds b's counts to a. @param {TrackCounts} a @param {TrackCounts} b @returns {TrackCounts} a */
function add(a, b) {
  for (const k of /** @type {(keyof TrackCounts)[]} */ (Object.keys(a))) a[k] += b[k];
  return a;
}

export class ReceiveVerification {
  /** @param {(m: object) => void} post sends a message to the page */
  constructor(post) {
    this._post = post;
    /** Imported keys by their base64url. @type {Map<string, Promise<CryptoKey|null>>} */
    this._keys = new Map();
    /** @type {Map<number, Upstream>} */
    this._ups = new Map();
    /** Newest accepted counter per kind, over every upstream: a new parent may not start far behind it. */
    this._shared = { video: { high: /** @type {bigint|null} */ (null) }, audio: { high: /** @type {bigint|null} */ (null) } };
    /** Why the key could not be used, if so ('' while fine). */
    this.keyError = '';
    /** Why the last frame that failed did: 'unsigned', 'signature', 'replay' ('' : none yet). */
    this.lastWhy = '';
    /** Counts of upstreams already gone, per kind, so totals never go backwards. @type {Record<string, TrackCounts>} */
    this._gone = { video: zero(), audio: zero() };
  }

  /**
   * The key as a CryptoKey, imported once. Null when there is none or the
   * browser cannot use it (no Ed25519): frames then pass unchecked, and the
   * page shows "unverified".
   * @param {string|null} b64
   * @returns {Promise<CryptoKey|null>}
   */
  _key(b64) {
    if (!b64) return Promise.resolve(null);
    let k = this._keys.get(b64);
    if (!k) {
      k = importKey(b64).catch((err) => {
        this.keyError = String(err);
        return null;
      });
      this._keys.set(b64, k);
    }
    return k;
  }

  /**
   * Makes the verifier of one receiver; resolves once its key is ready.
   * @param {number} up the upstream connection's id
   * @param {string} kind 'video' or 'audio'
   * @param {VerifyOptions|undefined} opts
   * @param {{sendKeyFrameRequest(): Promise<void>}} transformer the receiver's (keyframe requests go through it)
   * @param {(frame: any) => void} deliver writes a frame to the tab's decoder
   * @returns {Promise<TrackVerifier<any>>}
   */
  async track(up, kind, opts, transformer, deliver) {
    const key = await this._key(opts?.key ?? null);
    let u = this._ups.get(up);
    if (!u) this._ups.set(up, (u = { tracks: new Map(), video: null, lastKeyRequest: -Infinity, tampered: false }));
    if (kind === 'video') u.video = transformer;
    const upstream = u;
    const v = new TrackVerifier({
      kind: kind === 'video' ? 'v' : 'a',
      h264: kind === 'video' && !!opts?.h264,
      key,
      required: opts?.required !== false,
      shared: kind === 'video' ? this._shared.video : this._shared.audio,
      deliver,
      onBad: (verdict) => this._bad(up, upstream, verdict),
    });
    const old = u.tracks.get(kind);
    if (old) this._fold(kind, old);
    u.tracks.set(kind, v);
    return v;
  }

  /**
   * A frame failed: the decoder needs a keyframe (video), and the page
   * reports the parent.
   * @param {number} up @param {Upstream} u @param {Verdict} verdict
   */
  _bad(up, u, verdict) {
    u.tampered = true;
    this.lastWhy = verdict.why ?? '';
    const now = performance.now();
    if (verdict.evidence?.track === 'v' && u.video && now - u.lastKeyRequest >= REJECT_KEYFRAME_GAP_MS) {
      u.lastKeyRequest = now;
      u.video.sendKeyFrameRequest().catch(() => {});
    }
    this._post({ tampered: { up, why: verdict.why ?? '', evidence: verdict.evidence ?? null } });
  }

  /** Whether frames of upstream up failed verification: forwarding them on stops. @param {number} up */
  tampered(up) {
    return !!this._ups.get(up)?.tampered;
  }

  /** Forgets an upstream whose connection closed. @param {number} up @param {string} kind */
  remove(up, kind) {
    const u = this._ups.get(up);
    const v = u?.tracks.get(kind);
    if (!u || !v) return;
    this._fold(kind, v);
    u.tracks.delete(kind);
    if (u.tracks.size === 0) this._ups.delete(up);
  }

  /** @param {string} kind @param {TrackVerifier<any>} v */
  _fold(kind, v) {
    add(this._gone[kind === 'video' ? 'video' : 'audio'], v.counts);
  }

  /**
   * The stream's key changed (its source restarted): every receiver checks
   * against the new key from now on, and counters start afresh.
   * @param {string|null} b64
   */
  async setKey(b64) {
    const key = await this._key(b64);
    this._shared.video.high = this._shared.audio.high = null;
    for (const u of this._ups.values()) {
      for (const v of u.tracks.values()) v.setKey(key, v.required);
    }
  }

  /**
   * One upstream's receivers check from now on, or stop checking (they
   * still strip valid signatures): its path changed above this peer.
   * @param {number} up
   * @param {string|null} b64 the key
   * @param {boolean} required
   */
  async setUpstreamKey(up, b64, required) {
    const key = await this._key(b64);
    for (const v of this._ups.get(up)?.tracks.values() ?? []) v.setKey(key, required);
  }

  /**
   * Counts over every upstream since the worker started, per kind and in
   * total, plus each current upstream's.
   */
  stats() {
    const video = { ...this._gone.video };
    const audio = { ...this._gone.audio };
    /** @type {Record<string, {tampered: boolean, video?: TrackCounts, audio?: TrackCounts, checks: boolean}>} */
    const ups = {};
    for (const [id, u] of this._ups) {
      ups[id] = { tampered: u.tampered, checks: [...u.tracks.values()].some((v) => v.checks) };
      for (const [kind, v] of u.tracks) {
        /** @type {any} */ (ups[id])[kind] = { ...v.counts };
        add(kind === 'video' ? video : audio, v.counts);
      }
    }
    const total = add({ ...video }, audio);
    return { ...total, video, audio, keyError: this.keyError, lastWhy: this.lastWhy, upstreams: ups };
  }
}
