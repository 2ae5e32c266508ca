// PassthroughRelay: the main-thread half of Chromium's pass-through relay.
// Each upstream receiver gets an RTCRtpScriptTransform on one worker
// (relay-worker.js); each child's sender is track-less, and its
// createEncodedStreams() writer goes to the same worker, which copies the
// received frames into it unchanged. So a relaying tab decodes only for its
// own picture and encodes nothing; its children get byte-identical frames.
// Keyframe requests from children are read from their links' statistics
// (the sender has no keyframe event) and merged in the worker.
//
// Chromium only (createEncodedStreams is its API; FIELD-NOTES verified it in
// Chromium 156 without flags). Elsewhere the client relays its decoded track,
// re-encoding it (relay.js).
//
// The same worker checks source-signed frames (framesig-worker.js) for the
// tab's own playback: wherever the standard receive transform exists
// (Chromium, Firefox, Safari) create() starts it, forwarding or not, and the
// tab decodes only frames whose signature verified, stripped of it.

import { alignPayloadTypes, preferencesFor, upstreamCodec, withoutDependencyDescriptor } from './relay-sdp.js';

/** @typedef {import('./relay-sdp.js').UpstreamCodec} UpstreamCodec */

/** How often a child's link statistics are read for its PLI and FIR counts. */
export const KEYFRAME_POLL_MS = 250;

/**
 * How long a hello waits for the worker to start (a module fetch from the
 * same server: milliseconds, unless the machine is very busy: at a load of
 * 40 on 2 cores a tab's took over 3 s). Past it, the hello says re-encode,
 * which the tree treats conservatively, and the tab keeps re-encoding.
 */
export const WORKER_START_MS = 8000;

/** How long a child's offer waits for this tab's own upstream to be negotiated. */
export const UPSTREAM_WAIT_MS = 30_000;

/** Whether this browser has what the pass-through relay needs. */
export function passthroughSupported() {
  const Sender = globalThis.RTCRtpSender;
  return !!Sender && 'createEncodedStreams' in Sender.prototype &&
    typeof globalThis.RTCRtpScriptTransform === 'function' && typeof globalThis.Worker === 'function';
}

/** Whether this browser can run a receive transform in a worker (to check signed frames). */
export function receiveTransformSupported() {
  return typeof globalThis.RTCRtpScriptTransform === 'function' && typeof globalThis.Worker === 'function';
}

/**
 * What a tampering report from the worker says (framesig-worker.js).
 * @typedef {object} TamperNotice
 * @property {string} peer the parent whose connection delivered the frame
 * @property {string} why 'unsigned', 'signature' or 'replay'
 * @property {import('./framesig.js').Evidence|null} evidence
 */

export class PassthroughRelay {
  /**
   * Starts the receive worker, or returns null where it cannot run (no
   * receive transform, or a page of another origin that cannot start a
   * worker from Canopy's: the web component on a third-party site).
   * @param {{forward?: boolean}} [opts] forward: false checks frames only, and never passes them on
   * @returns {PassthroughRelay|null}
   */
  static create(opts = {}) {
    if (!receiveTransformSupported()) return null;
    const forward = opts.forward !== false && passthroughSupported();
    try {
      return new PassthroughRelay(new Worker(new URL('./relay-worker.js', import.meta.url), { type: 'module' }), forward);
    } catch (err) {
      console.info('canopy: receive worker unavailable (frames play unverified, relaying re-encodes):', err);
      return null;
    }
  }

  /** @param {Worker} worker @param {boolean} [forward] */
  constructor(worker, forward = true) {
    this._worker = worker;
    /** Whether children are fed encoded frames (pass-through); else this worker only checks. */
    this.forwarding = forward;
    /** Parents by upstream id, for tampering reports. @type {Map<number, string>} */
    this._peers = new Map();
    /** Called when a frame from a parent failed verification. @type {(n: TamperNotice) => void} */
    this.onTampered = () => {};
    /** Whether the worker runs: until then (and if it never does) nothing is routed through it. */
    this.ready = false;
    /** @type {(ok: boolean) => void} */
    let settle = () => {};
    /** Resolves with ready once the worker runs, or fails to, or WORKER_START_MS pass. @type {Promise<boolean>} */
    this.started = new Promise((resolve) => { settle = resolve; });
    setTimeout(() => settle(this.ready), WORKER_START_MS);
    /** @type {() => void} */
    let ran = () => {};
    /** Resolves when the worker runs, however late (never if it fails). @type {Promise<void>} */
    this._running = new Promise((resolve) => { ran = resolve; });
    /** @type {WeakMap<RTCPeerConnection, number>} */
    this._ids = new WeakMap();
    this._next = 1;
    /** @type {Map<number, (stats: any) => void>} */
    this._asks = new Map();
    /** Keyframe polls by child. @type {Map<string, ReturnType<typeof setInterval>>} */
    this._polls = new Map();
    worker.onmessage = (ev) => {
      const m = ev.data;
      if (m.ready) {
        this.ready = true;
        settle(true);
        ran();
      }
      if (m.tampered) {
        const t = m.tampered;
        this.onTampered({ peer: this._peers.get(t.up) ?? '', why: t.why, evidence: t.evidence });
      }
      if (m.id && this._asks.has(m.id)) {
        /** @type {(s: any) => void} */ (this._asks.get(m.id))(m.stats);
        this._asks.delete(m.id);
      }
    };
    worker.onerror = (ev) => {
      console.warn('canopy: the pass-through worker failed:', ev.message);
      settle(this.ready);
    };
  }

  /** @param {RTCPeerConnection} pc @returns {number} the worker's id for pc */
  _idOf(pc) {
    let id = this._ids.get(pc);
    if (!id) this._ids.set(pc, (id = this._next++));
    return id;
  }

  /**
   * Routes a receiver of an upstream connection through the worker (which
   * hands every frame back to the tab's decoder, checked against verify's
   * key). Once per receiver.
   * @param {RTCPeerConnection} pc
   * @param {RTCRtpReceiver} receiver
   * @param {import('./framesig-worker.js').VerifyOptions} [verify] no key: frames pass unchecked
   * @param {string} [peer] the parent pc connects to
   */
  receive(pc, receiver, verify, peer) {
    if (receiver.transform) return;
    if (!this.ready) {
      // A worker slow to start (a busy machine): attach once it runs; the
      // frames before go to the decoder unchecked, and the panel says so.
      void this._running.then(() => { if (pc.connectionState !== 'closed') this.receive(pc, receiver, verify, peer); });
      return;
    }
    const up = this._idOf(pc);
    if (peer) this._peers.set(up, peer);
    receiver.transform = new RTCRtpScriptTransform(this._worker, { up, kind: receiver.track.kind, verify });
  }

  /** The worker's id of pc, or 0 when none of its receivers passed through it. @param {RTCPeerConnection} pc */
  upstreamId(pc) {
    return this._ids.get(pc) ?? 0;
  }

  /**
   * Upstream up's receivers check against key from now on, or (required
   * false: a re-encoding hop appeared above) only strip valid signatures.
   * @param {number} up
   * @param {string|null} key
   * @param {boolean} required
   */
  setUpstreamKey(up, key, required) {
    this._worker.postMessage({ cmd: 'key', up, key, required });
  }

  /** The stream's key changed: every receiver checks against it from now on. @param {string|null} key */
  setKey(key) {
    this._worker.postMessage({ cmd: 'key', key });
  }

  /** Forwards pc's frames to the children from now on. @param {RTCPeerConnection} pc */
  activate(pc) {
    this._worker.postMessage({ cmd: 'active', up: this._idOf(pc) });
  }

  /**
   * Hands a fresh track-less sender's encoded streams to the worker. Call it
   * right after addTransceiver: after negotiation Chromium throws "Too late
   * to create encoded streams".
   * @param {string} child
   * @param {string} kind
   * @param {RTCRtpSender} sender
   */
  addSender(child, kind, sender) {
    const { readable, writable } = /** @type {any} */ (sender).createEncodedStreams();
    this._worker.postMessage({ cmd: 'output', child, kind, readable, writable }, [readable, writable]);
  }

  /**
   * The child's link is up: the worker starts sending to it at the next
   * keyframe (and asks for one), and its PLI/FIR counts are watched.
   * @param {string} child
   * @param {RTCPeerConnection} pc the link to the child
   * @param {boolean} [burst] start from the worker's cached GOP (a promoted standby link) instead of
   *   waiting for the next keyframe
   */
  childLive(child, pc, burst = false) {
    /** @type {Record<string, number>} */
    const pts = {};
    for (const tr of pc.getTransceivers()) {
      const kind = tr.receiver.track.kind;
      const c = tr.sender.getParameters().codecs?.[0];
      if (c) pts[kind] = c.payloadType;
    }
    this._worker.postMessage({ cmd: 'live', child, pts, burst });
    if (this._polls.has(child)) return;
    let seen = 0;
    let reading = false;
    this._polls.set(child, setInterval(async () => {
      if (reading || pc.connectionState === 'closed') return;
      reading = true;
      try {
        let n = 0;
        (await pc.getStats()).forEach((r) => {
          if (r.type === 'outbound-rtp' && r.kind === 'video') n += (r.pliCount ?? 0) + (r.firCount ?? 0);
        });
        if (n > seen) this._worker.postMessage({ cmd: 'keyframe' });
        seen = Math.max(seen, n);
      } catch {
        // closed meanwhile
      } finally {
        reading = false;
      }
    }, KEYFRAME_POLL_MS));
  }

  /** @param {string} child */
  removeChild(child) {
    clearInterval(this._polls.get(child));
    this._polls.delete(child);
    this._worker.postMessage({ cmd: 'drop', child });
  }

  /**
   * Records the hash and arrival time of up to max frames per kind of the
   * active upstream (0 stops); stats() returns them. A diagnostic the
   * browser tests use to prove frames pass byte for byte.
   * @param {number} max
   */
  recordHashes(max) {
    this._worker.postMessage({ cmd: 'hashes', max });
  }

  /** @returns {Promise<any>} the worker's counters (and recorded hashes) */
  stats() {
    const id = this._next++;
    return new Promise((resolve) => {
      this._asks.set(id, resolve);
      this._worker.postMessage({ cmd: 'stats', id });
      setTimeout(() => { if (this._asks.delete(id)) resolve(null); }, 5000);
    });
  }

  /** Stops the worker; the relay cannot be used again. */
  close() {
    for (const t of this._polls.values()) clearInterval(t);
    this._polls.clear();
    this._worker.terminate();
    this.ready = false;
  }
}

/**
 * The codecs pc receives, by kind, once negotiated; null before that.
 * @param {RTCPeerConnection|null} pc
 * @param {string[]} kinds
 * @returns {Map<string, UpstreamCodec>|null}
 */
export function receivedCodecs(pc, kinds) {
  if (!pc) return null;
  /** @type {Map<string, UpstreamCodec>} */
  const out = new Map();
  for (const tr of pc.getTransceivers()) {
    if (!tr.currentDirection || tr.currentDirection === 'inactive') continue;
    const c = upstreamCodec(tr.receiver.getParameters().codecs ?? []);
    if (c) out.set(tr.receiver.track.kind, c);
  }
  return kinds.every((k) => out.has(k)) ? out : null;
}

/**
 * Waits until get() gives the upstream's codecs, polling.
 * @param {() => Map<string, UpstreamCodec>|null} get
 * @param {() => boolean} cancelled
 * @returns {Promise<Map<string, UpstreamCodec>>}
 */
export async function waitForCodecs(get, cancelled) {
  const deadline = performance.now() + UPSTREAM_WAIT_MS;
  for (;;) {
    const c = get();
    if (c) return c;
    if (cancelled() || performance.now() > deadline) throw new Error('no upstream media to pass through');
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Narrows a child link's transceivers to the upstream's codecs, then offers
 * with the upstream's payload type numbers. Returns the offer SDP.
 * @param {RTCPeerConnection} pc
 * @param {Map<string, UpstreamCodec>} codecs
 * @returns {Promise<string>}
 */
export async function passthroughOffer(pc, codecs) {
  for (const tr of pc.getTransceivers()) {
    const kind = tr.receiver.track.kind;
    const codec = codecs.get(kind);
    const caps = RTCRtpSender.getCapabilities(kind)?.codecs ?? [];
    const prefs = codec && preferencesFor(caps, codec);
    if (!prefs) {
      console.warn('canopy: this browser cannot send the upstream codec', codec?.mimeType, 'to a child');
      continue;
    }
    tr.setCodecPreferences(prefs);
  }
  const offer = await pc.createOffer();
  const wants = [...codecs].map(([kind, c]) => ({ ...c, kind }));
  const { sdp, missing } = alignPayloadTypes(offer.sdp ?? '', wants);
  if (missing.length) console.warn('canopy: could not align payload types for', missing.join(', '));
  return withoutDependencyDescriptor(sdp);
}
