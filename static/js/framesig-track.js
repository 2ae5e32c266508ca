// The receive side of signed frames for one track of one parent connection:
// every frame is judged (framesig.js) as it arrives, judgements run
// concurrently (WebCrypto is asynchronous), and frames reach the decoder in
// the order they came, without their signature. A frame that fails is not
// delivered; after a failed video frame, deltas wait for the next verified
// keyframe (they refer to what was dropped), and the owner is told once per
// failure so it can ask for a keyframe and report the parent. Pure apart
// from WebCrypto: node --test runs it with plain objects for frames.

import { Counters, checkFrame, decide } from './framesig.js';

/** @typedef {import('./framesig.js').Verdict} Verdict */

/**
 * Frames judged at once before the reader waits: ~1 s of video at 30 fps.
 * Verifying takes well under a frame interval, so this is only reached when
 * the worker is starved of CPU; it bounds memory then.
 */
export const MAX_IN_FLIGHT = 32;

/**
 * An encoded frame as the transform hands it over (RTCEncodedVideoFrame or
 * RTCEncodedAudioFrame, or a test's object).
 * @typedef {{data: ArrayBuffer, type?: string}} FrameLike
 */

/**
 * How a track's frames fared, since it started.
 * @typedef {object} TrackCounts
 * @property {number} verified frames delivered after their signature verified
 * @property {number} rejected frames dropped as forged, unsigned or replayed
 * @property {number} stale repeats dropped quietly (a new parent's burst)
 * @property {number} held genuine video frames dropped while waiting for a keyframe after a rejection
 * @property {number} unverified frames delivered unchecked (no key, or a re-encoding hop above)
 */

/**
 * After a path becomes verifiable (a re-encoding hop above went away), the
 * frames already on their way are still unsigned: for this long (ms) an
 * unsigned frame is dropped quietly, not reported.
 */
export const PATH_GRACE_MS = 2000;

/**
 * After the stream's key changes (its source came back with a new one),
 * the old source's last frames may still be on their way through the tree:
 * for this long (ms) a frame that fails is dropped, not reported (as a Go
 * viewer's: mesh/verify.go keyGrace). Reported, they made the server bar
 * honest relays (a soak whose source rejoined with a new key).
 */
export const KEY_GRACE_MS = 2000;

/** @template {FrameLike} F */
export class TrackVerifier {
  /**
   * @param {object} o
   * @param {'v'|'a'} o.kind
   * @param {boolean} o.h264 whether frames are H264 access units (else VP8/Opus trailers)
   * @param {CryptoKey|null} o.key the stream's key; null delivers every frame unchecked
   * @param {boolean} [o.required] whether every frame must verify (true by default); false on a
   *   path that cannot be verified (a re-encoding hop above): frames play unchecked, but one that
   *   carries a valid signature is still stripped of it
   * @param {{high: bigint|null}} o.shared newest counter accepted on this track over every parent
   * @param {(frame: F) => void} o.deliver hands a frame to the decoder
   * @param {(verdict: Verdict) => void} [o.onBad] a frame failed (forged, unsigned or replayed)
   * @param {() => number} [o.now] ms, monotonic
   */
  constructor(o) {
    this.kind = o.kind;
    this.h264 = o.h264;
    this.key = o.key;
    this.required = o.required !== false;
    this._shared = o.shared;
    this._counters = new Counters(o.shared);
    this._deliver = o.deliver;
    this._onBad = o.onBad ?? (() => {});
    this._now = o.now ?? (() => performance.now());
    this._graceUntil = -Infinity;
    this._keyGraceUntil = -Infinity;
    this._tail = Promise.resolve();
    this._inFlight = 0;
    /** Video only: deltas are dropped until a verified keyframe. */
    this.waitKey = false;
    /** @type {TrackCounts} */
    this.counts = { verified: 0, rejected: 0, stale: 0, held: 0, unverified: 0 };
    /** The last rejection, for the stats panel and tests. @type {Verdict|null} */
    this.lastBad = null;
  }

  /** Whether frames are checked, and the ones that fail dropped. */
  get checks() {
    return !!this.key && this.required;
  }

  /**
   * Judges a frame and queues its delivery behind the frames before it.
   * @param {F} frame
   * @returns {Promise<void>|null} when many frames are in flight, a promise to await before the next push
   */
  push(frame) {
    const key = this.key;
    if (!key) {
      this.counts.unverified++;
      this._tail = this._tail.then(() => this._deliver(frame));
      return null;
    }
    const required = this.required;
    const data = new Uint8Array(frame.data);
    // The crypto runs at once, concurrently with the frames before it; the
    // counter rules and the delivery run in arrival order.
    const checked = checkFrame(key, this.kind, data, this.h264).catch(() => null);
    this._inFlight++;
    const done = this._tail.then(async () => {
      this._inFlight--;
      const c = await checked;
      if (!required) {
        this.counts.unverified++;
        if (c?.ok && c.signed) setData(frame, c.signed.media);
        this._deliver(frame);
        return;
      }
      this._settle(frame, c ? decide(this._counters, this.kind, c, frame.type === 'key') : { result: 'bad', why: 'error' });
    });
    this._tail = done;
    return this._inFlight >= MAX_IN_FLIGHT ? done : null;
  }

  /**
   * Checks later frames against another key (the source restarted, or the
   * path changed), with counters afresh; a null key delivers them unchecked.
   * @param {CryptoKey|null} key
   * @param {boolean} [required] whether they must verify (see the constructor)
   */
  setKey(key, required = this.required) {
    if (required && !this.required) this._graceUntil = this._now() + PATH_GRACE_MS;
    if (key && this.key && key !== this.key) this._keyGraceUntil = this._now() + KEY_GRACE_MS;
    this.key = key;
    this.required = required;
    this._counters = new Counters(this._shared);
    this.waitKey = false;
  }

  /** Resolves once every frame pushed so far was delivered or dropped. */
  drain() {
    return this._tail;
  }

  /** @param {F} frame @param {Verdict} v */
  _settle(frame, v) {
    if (v.result === 'stale') {
      this.counts.stale++;
      return;
    }
    if (v.result === 'bad') {
      if (v.why === 'unsigned' && this._now() < this._graceUntil) {
        this.counts.stale++; // still the re-encoded path's: not the parent's fault
        return;
      }
      this.counts.rejected++;
      this.lastBad = v;
      if (this.kind === 'v') this.waitKey = true;
      if (this._now() < this._keyGraceUntil) return; // the old source's, still on its way
      this._onBad(v);
      return;
    }
    if (this.waitKey) {
      if (frame.type !== 'key') {
        this.counts.held++;
        return;
      }
      this.waitKey = false;
    }
    this.counts.verified++;
    setData(frame, /** @type {Uint8Array} */ (v.media));
    this._deliver(frame);
  }
}

/** Gives frame the bytes media holds (without copying when they fill their buffer). @param {FrameLike} frame @param {Uint8Array} media */
function setData(frame, media) {
  frame.data = media.byteOffset === 0 && media.byteLength === media.buffer.byteLength
    ? /** @type {ArrayBuffer} */ (media.buffer)
    : /** @type {ArrayBuffer} */ (media.slice().buffer);
}
