// FrameChecks: the page's half of source-signed frames (the worker's half is
// framesig-worker.js). It keeps what the server said: the stream's key
// (welcome, parent, sourceKey; from the server only, never from a relay) and
// whether each parent's path can be verified (parent.verify=false below a
// re-encoding hop). It gives each receiver's transform its options, turns
// the worker's rejections into `tampered` reports, and sums the worker's
// counts into the stats snapshot ("verified N", "unverified", "tampered").
//
// A browser without a receive transform (no RTCRtpScriptTransform, or the
// worker could not start) cannot check or strip: its hello says noVerify
// (cannotVerify), it plays what it gets and shows "unverified" (why: "no
// transform"). Frames with a VP8/Opus trailer must not reach such a
// player: on a signed stream the server hangs it only below its own relay
// node, which strips them for it, or a browser that re-encodes (README,
// "Signed frames in the browser").

import { Type } from './protocol.js';

/** @typedef {import('./relay-passthrough.js').PassthroughRelay} PassthroughRelay */
/** @typedef {import('./protocol.js').Message} Message */

/** After a rejected frame the panel says "tampered" for this long (ms), then what holds again. */
export const TAMPERED_SHOW_MS = 10_000;
/**
 * Reports about one parent go at most this often (ms). The server moves the
 * reporter at the first; a repeat covers a report lost in a reconnect.
 */
export const REPORT_GAP_MS = 2000;

/**
 * What the stats snapshot carries about verification.
 * @typedef {object} FrameCheckSnapshot
 * @property {'verified'|'unverified'|'tampered'} verification what the playing connection's frames are
 * @property {number} framesVerified video and audio frames played after their signature verified, since start
 * @property {number} framesRejected frames dropped as forged, unsigned or replayed, since start
 * @property {string} [unverifiedWhy] why frames play unchecked: 'unsigned stream', 're-encoded above', 'no transform', the key error
 */

/**
 * Whether this tab must say noVerify in its hello: no receive worker runs
 * to check the signatures and take them off before the decoder (no
 * transform, a worker that failed or did not start in time). A worker that
 * starts later changes nothing: the server was told, and its parents say
 * verify=false.
 * @param {{ready: boolean}|null|undefined} relay
 */
export function cannotVerify(relay) {
  return !relay?.ready;
}

export class FrameChecks {
  /**
   * @param {PassthroughRelay|null} relay the receive worker (null: this browser cannot check frames)
   * @param {(m: Message) => void} send sends a message to the server
   */
  constructor(relay, send) {
    this._relay = relay;
    this._send = send;
    /** The stream's key, base64url; '' when its frames are not signed. */
    this.key = '';
    this._h264 = false;
    /** Whether the next parent's path is verifiable (its parent message's verify). */
    this._nextVerify = true;
    /** @type {WeakMap<RTCPeerConnection, boolean>} */
    this._verifyOf = new WeakMap();
    /** Last report per parent, ms. @type {Map<string, number>} */
    this._reported = new Map();
    this._lastReject = -Infinity;
    this._rejected = 0;
    /** Tampering reports sent. */
    this.reports = 0;
    /** Whether the last hello said noVerify (cannotVerify). */
    this.declaredNoVerify = false;
    if (relay) relay.onTampered = (n) => this._tampered(n);
  }

  /**
   * The welcome: the stream's key and tracks.
   * @param {string} key
   * @param {import('./protocol.js').Track[]} tracks
   */
  welcome(key, tracks) {
    this._h264 = tracks.some((t) => t.kind === 'video' && t.mimeType.toLowerCase() === 'video/h264');
    this.setKey(key);
  }

  /**
   * A parent message: its path's verifiability, and the key when it carries one.
   * @param {string|undefined} key
   * @param {boolean|undefined} verify
   */
  parent(key, verify) {
    this._nextVerify = verify !== false;
    if (key && key !== this.key) this.setKey(key);
  }

  /** The source's key changed ('' : it signs nothing now). @param {string} key */
  setKey(key) {
    if (key === this.key) return;
    this.key = key;
    this._relay?.setKey(key || null);
  }

  /**
   * A move above this peer changed whether its path can be verified (a
   * sourceKey message with verify): its current connections' receivers
   * check from now on, or stop checking.
   * @param {(RTCPeerConnection|null)[]} pcs
   * @param {boolean} verify
   */
  pathChanged(pcs, verify) {
    this._nextVerify = verify;
    for (const pc of new Set(pcs)) {
      if (!pc) continue;
      this._verifyOf.set(pc, verify);
      const up = this._relay?.upstreamId(pc);
      if (up) this._relay?.setUpstreamKey(up, this.key || null, verify);
    }
  }

  /** A connection to the parent of the last parent message. @param {RTCPeerConnection} pc */
  connection(pc) {
    this._verifyOf.set(pc, this._nextVerify);
  }

  /**
   * The transform options of pc's receivers.
   * @param {RTCPeerConnection} pc
   * @returns {import('./framesig-worker.js').VerifyOptions}
   */
  optionsFor(pc) {
    // On an unverifiable path the key still serves to strip the signatures
    // that are there (frames in flight when the path changed).
    return { key: this.key || null, h264: this._h264, required: this._verifyOf.get(pc) !== false };
  }

  /** @param {import('./relay-passthrough.js').TamperNotice} n */
  _tampered(n) {
    this._rejected++;
    this._lastReject = performance.now();
    if (!n.peer || !n.evidence) return;
    const now = performance.now();
    if (now - (this._reported.get(n.peer) ?? -Infinity) < REPORT_GAP_MS) return;
    this._reported.set(n.peer, now);
    if (this._reported.size > 64) this._reported.delete(/** @type {string} */ (this._reported.keys().next().value));
    console.warn(`canopy: a frame from parent ${n.peer} failed verification (${n.why}); reporting it`);
    this.reports++;
    const e = n.evidence;
    this._send({ type: Type.TAMPERED, peer: n.peer, evidence: { track: e.track, counter: e.counter, hash: e.hash, sig: e.sig, last: e.last } });
  }

  /**
   * What to show about the frames of the connection that plays.
   * @param {RTCPeerConnection|null} pc
   * @param {number} now ms
   * @returns {Promise<FrameCheckSnapshot>}
   */
  async sample(pc, now) {
    const relay = this._relay;
    const s = relay?.ready ? await relay.stats() : null;
    const v = s?.verify;
    const framesVerified = v?.verified ?? 0;
    const framesRejected = Math.max(v?.rejected ?? 0, this._rejected);
    const up = pc && relay ? v?.upstreams?.[relay.upstreamId(pc)] : undefined;
    if (now - this._lastReject < TAMPERED_SHOW_MS || up?.tampered) {
      return { verification: 'tampered', framesVerified, framesRejected };
    }
    /** @type {string} */
    let why = '';
    if (!this.key) why = 'unsigned stream';
    else if (!relay?.ready || this.declaredNoVerify) why = 'no transform';
    else if (pc && this._verifyOf.get(pc) === false) why = 're-encoded above';
    else if (v?.keyError) why = v.keyError;
    else if (pc && !up) why = 'not checked'; // its receivers are not in the worker (yet)
    else if (up && !up.checks) why = 'not checked';
    if (why) return { verification: 'unverified', framesVerified, framesRejected, unverifiedWhy: why };
    return { verification: 'verified', framesVerified, framesRejected };
  }
}
