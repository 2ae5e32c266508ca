// Hot standby parents in the browser (README "Standby parents"). The server
// names each tab (but a private viewer) a standby parent: the parent the
// tree would give it if its own failed now. The standby parent offers as to
// a child and this tab answers, so ICE and DTLS are done and kept alive by
// consent checks, but no media flows: a pass-through standby parent's
// worker has an output for this tab that is not live, so it writes no
// frame to that track-less sender and Chromium sends no RTP (nor encodes
// anything); a re-encoding one (Firefox, Safari) gives its senders no track
// until promoted. A Go one sends nothing until promoted either. When the
// parent fails — its connection fails or disconnects, its media stops, or
// the server detaches it — the tab makes the standby link its parent at
// once and says `promote`; the standby parent starts sending when the
// server passes the promote on (a pass-through tab or a Go peer beginning
// with its cached GOP, so the tab decodes at once instead of waiting for
// the source's next keyframe; a re-encoding tab's new encoder with a
// keyframe).
//
// This module holds the child side's link and the pure decisions; client.js
// wires them to its own connection to the parent, and relay.js's ChildLink
// (with `standby: true`) is the parent side's.

import { MAX_EDGE_CANDIDATES, SignalKind } from './protocol.js';
import { ofLink, reoffered, setLink, stamped } from './link.js';

/** @typedef {import('./protocol.js').Signal} Signal */
/** @typedef {import('./protocol.js').ICEServer} ICEServer */

/**
 * Standby links a tab holds at most, per child slot (as Go peers and the
 * server: server/standby.go standbyPerSlot). Each costs a PeerConnection
 * and consent checks every few seconds, no RTP.
 */
export const STANDBY_PER_SLOT = 2;

/**
 * The playing connection counts as silent after this long without an RTP
 * packet of any of its tracks (video comes every 33 ms at 30 fps, audio
 * every 20 ms): Go peers' stallTimeout. Shorter ones (500 ms, 1 s) switched
 * tabs away from healthy parents on the shared test machine (load ~50 on 2
 * cores stalls whole browsers for a second or more), and every refused
 * switch counts as a stall report against the parent, so they fed the
 * churn they were meant to cut. A parent that dies or leaves is noticed
 * sooner anyway: the server sees its WebSocket close and promotes the
 * standby links at once, and a failed connection switches at once.
 */
export const MEDIA_SILENCE_MS = 1500;

/**
 * The silence that is enough once the server said the parent's signaling
 * dropped (a `quiet` message): a parent whose process died looks like a
 * signaling blip to the server until its media stops, which a child sees
 * first. 120 ms is under four video frames at 30 fps and six audio
 * packets, a gap a live parent rarely leaves (and one that did only moves
 * this tab, hot, to its standby); the tab wakes when it ends instead of on
 * the next poll. It holds QUIET_FOR_MS. 300 ms, checked every
 * SILENCE_POLL_MS, made a killed relay's orphans stall ~450 ms.
 */
export const QUIET_SILENCE_MS = 120;
/** How long a `quiet` notice shortens the silence a tab waits. */
export const QUIET_FOR_MS = 15000;

/**
 * How long the playing connection may be silent before the tab switches to
 * its standby link, ms (Infinity: silence alone never switches it). A tab
 * that relays by re-encoding (Firefox, Safari) switches on silence only
 * after the server's `quiet` notice: a Firefox at a load average of ~40
 * here went 1.5 s without media from a live parent, its switch was refused
 * (the standby parent's slot was the parent's), and the refusal, a stall
 * report, made the trust policy move four peers. Its connection failing,
 * and the server's own plan when the parent leaves, still switch it.
 * @param {boolean} quiet the server said the parent's signaling dropped
 * @param {boolean} passthrough the tab relays by passing frames through (Chromium)
 */
export function silenceLimit(quiet, passthrough) {
  if (quiet) return QUIET_SILENCE_MS;
  return passthrough ? MEDIA_SILENCE_MS : Infinity;
}

/** How often the playing connection's last packet time is read (a synchronous, cheap call). */
export const SILENCE_POLL_MS = 100;

/**
 * A poll that runs this much later than SILENCE_POLL_MS after the last one
 * means the tab itself was starved (a busy machine, a background tab), and
 * so were its packet timestamps' readers: its silence says nothing about
 * the parent, and the count starts again. Seen on the shared test machine:
 * tabs at load ~70 switched away from live parents without it.
 */
export const STARVED_POLL_MS = 400;

/** After the server refused a switch, the standby link is not promoted again for this long (as Go peers: stallRepeat). */
export const REFUSED_RETRY_MS = 3000;

/**
 * Whether a connection's state says its parent is gone or going: failed or
 * closed, or ICE disconnected (consent checks unanswered for a few seconds,
 * which is how a killed browser or a cut link looks).
 * @param {{connectionState: string, iceConnectionState: string}} pc
 */
export function parentFailed(pc) {
  return pc.connectionState === 'failed' || pc.connectionState === 'closed' || pc.connectionState === 'disconnected' ||
    pc.iceConnectionState === 'failed' || pc.iceConnectionState === 'disconnected' || pc.iceConnectionState === 'closed';
}

/**
 * Tracks when a connection last received a packet, from its receivers'
 * synchronization sources (whose entries vanish 10 s after the last packet,
 * so the newest time seen is remembered), and forgets it when the tab
 * itself was starved (STARVED_POLL_MS). Pure apart from the reading.
 */
export class SilenceWatch {
  constructor() {
    /** @type {object|null} */ this._of = null;
    this._heard = 0;
    this._polled = 0;
  }

  /**
   * Records what pc's receivers say and returns how long pc has been
   * silent, ms (0 if it never received anything).
   * @param {object} pc the connection (identity only)
   * @param {number[]} times the receivers' synchronization source timestamps
   * @param {number} now performance.now()
   * @param {number} wallNow Date.now(): older Chromiums give wall-clock times
   */
  silentFor(pc, times, now, wallNow) {
    const starved = this._polled > 0 && now - this._polled > STARVED_POLL_MS;
    this._polled = now;
    if (pc !== this._of) {
      this._of = pc;
      this._heard = 0;
    }
    if (starved && (this._heard || times.length)) {
      this._heard = now; // silence counts from now, not from before the stall
      return 0;
    }
    for (const t of times) {
      // Spec: relative to performance.timeOrigin; some versions used the epoch.
      const at = t > 1e12 ? now - (wallNow - t) : t;
      if (at > this._heard) this._heard = Math.min(at, now);
    }
    return this._heard ? now - this._heard : 0;
  }
}

/** @param {RTCPeerConnection} pc */
export function isUp(pc) {
  return pc.connectionState === 'connected' ||
    pc.iceConnectionState === 'connected' || pc.iceConnectionState === 'completed';
}

/**
 * @typedef {object} StandbyOptions
 * @property {string} peer the standby parent's id
 * @property {ICEServer[]} iceServers
 * @property {boolean} private relay candidates only
 * @property {(signal: Signal) => void} send sends a signal to the standby parent through the server
 * @property {(pc: RTCPeerConnection, receiver: RTCRtpReceiver) => void} [receive] routes a receiver through the pass-through worker
 * @property {(offer: Signal) => void} [renew] takes an offer of a new link from the standby parent (link.js): a new connection answers it
 */

/**
 * The child side's link to its standby parent: it answers the parent's
 * offer and collects the (muted) tracks; release() hands the connection
 * over to the client when it becomes the parent.
 */
export class StandbyUpstream {
  /**
   * @param {StandbyOptions} opts
   * @param {{pc: RTCPeerConnection, tracks: Map<string, MediaStreamTrack>}} [from] an open link to wrap
   *   (the one a refused switch gives back)
   */
  constructor(opts, from) {
    this.peer = opts.peer;
    this._opts = opts;
    this.pc = from?.pc ?? new RTCPeerConnection({ iceServers: opts.iceServers, iceTransportPolicy: opts.private ? 'relay' : 'all' });
    /** The parent's tracks, by kind, muted until it is promoted. @type {Map<string, MediaStreamTrack>} */
    this.tracks = from?.tracks ?? new Map();
    /** @type {Signal[]} */ this._pending = [];
    /** Serialises SDP and candidate handling. */ this.chain = Promise.resolve();
    this._released = false;
    const pc = this.pc;
    pc.onicecandidate = (ev) => {
      if (this._released || !ev.candidate || !ev.candidate.candidate) return;
      opts.send(stamped(pc, { kind: SignalKind.CANDIDATE, candidate: ev.candidate.toJSON() }));
    };
    pc.ontrack = (ev) => {
      const receiver = pc.getReceivers().find((r) => r.track === ev.track);
      if (receiver) opts.receive?.(pc, receiver); // set up now: the switch must not wait for it
      this.tracks.set(ev.track.kind, ev.track);
    };
    pc.onconnectionstatechange = pc.oniceconnectionstatechange = null;
  }

  /** Whether the link is up (ICE and DTLS done) and can be switched to. */
  get connected() {
    return !this._released && isUp(this.pc);
  }

  /** @param {Signal} sig the standby parent's offer or candidate */
  onSignal(sig) {
    const pc = this.pc;
    this.chain = this.chain.then(async () => {
      if (this._released) return;
      if (reoffered(pc, sig)) {
        this._opts.renew?.(sig); // a new link's offer: a new connection takes it
        return;
      }
      if (!ofLink(pc, sig)) return; // a signal of a link replaced since
      if (sig.kind === SignalKind.OFFER) {
        setLink(pc, sig.link ?? 0);
        await pc.setRemoteDescription({ type: 'offer', sdp: sig.sdp });
        for (const c of this._pending.splice(0)) if (ofLink(pc, c) && c.candidate) await addCandidate(pc, c.candidate);
        await pc.setLocalDescription(await pc.createAnswer());
        if (!this._released && pc.localDescription) this._opts.send(stamped(pc, { kind: SignalKind.ANSWER, sdp: pc.localDescription.sdp }));
      } else if (sig.kind === SignalKind.CANDIDATE && sig.candidate) {
        if (pc.remoteDescription) await addCandidate(pc, sig.candidate);
        else if (this._pending.length < MAX_EDGE_CANDIDATES) this._pending.push(sig);
      }
    }).catch((err) => {
      console.warn('canopy: signaling with the standby parent failed:', err);
    });
  }

  /** Hands the connection to the client (its handlers are the client's from now on). @returns {RTCPeerConnection} */
  release() {
    this._released = true;
    this.pc.onicecandidate = this.pc.ontrack = null;
    return this.pc;
  }

  close() {
    this.release().close();
  }
}

/** @param {RTCPeerConnection} pc @param {RTCIceCandidateInit} c */
async function addCandidate(pc, c) {
  try {
    await pc.addIceCandidate(c);
  } catch (err) {
    console.warn('canopy: bad remote candidate from the standby parent:', err);
  }
}
