// ChildLink: one child this tab relays to. The parent offers: one send-only
// transceiver per media kind, SDP and ICE through the server as signal
// messages. Two ways to fill it:
// - pass-through (Chromium): the transceivers carry no track; their encoded
//   streams go to the PassthroughRelay's worker, which writes the frames
//   this tab receives into them unchanged; the offer uses the upstream's
//   codec and payload type numbers (relay-passthrough.js);
// - re-encode (elsewhere): they carry the track this tab receives (or
//   nothing until it has one); when this tab's own parent changes, setTrack
//   swaps the new track into the same sender.
// Either way the child's connection and decoder carry on across the switch.

import { MAX_EDGE_CANDIDATES, SignalKind } from './protocol.js';
import { newLinkId, ofLink, setLink, stamped } from './link.js';
import { passthroughOffer } from './relay-passthrough.js';
import { withSendBitrates } from './relay-sdp.js';
import { readLink } from './uplink.js';

/** @typedef {import('./uplink.js').LinkFigures} LinkFigures */

/** @typedef {import('./protocol.js').Signal} Signal */
/** @typedef {import('./protocol.js').ICEServer} ICEServer */

/**
 * Puts `mime` (e.g. 'video/VP8') first among a transceiver's codec
 * preferences: Chromium re-encodes what it relays, and VP8 is the cheapest
 * encoder every browser has. A no-op where the browser cannot say.
 * @param {RTCRtpTransceiver} tr
 * @param {string} kind
 */
export function preferCodec(tr, kind) {
  if (kind !== 'video' || typeof tr.setCodecPreferences !== 'function') return;
  const caps = globalThis.RTCRtpReceiver?.getCapabilities?.('video');
  if (!caps) return;
  const codecs = orderCodecs(caps.codecs, 'video/vp8');
  try {
    tr.setCodecPreferences(codecs);
  } catch {
    // an older browser that rejects the list: keep its defaults
  }
}

/**
 * Returns codecs with those of the preferred MIME type first, the rest in
 * their original order. Pure.
 * @template {{mimeType: string}} C
 * @param {C[]} codecs
 * @param {string} mime lower-case, e.g. 'video/vp8'
 * @returns {C[]}
 */
export function orderCodecs(codecs, mime) {
  const first = codecs.filter((c) => c.mimeType.toLowerCase() === mime);
  const rest = codecs.filter((c) => c.mimeType.toLowerCase() !== mime);
  return first.length ? [...first, ...rest] : codecs;
}

/**
 * @typedef {object} ChildOptions
 * @property {string} peer the child's id
 * @property {ICEServer[]} iceServers
 * @property {string[]} kinds media kinds to send ('video', 'audio')
 * @property {Map<string, MediaStreamTrack>} tracks the tracks to send now, by kind (may be empty)
 * @property {(signal: Signal) => void} send sends a signal to the child through the server
 * @property {(counters: {bytes: number, packets: number}) => void} onClosed called once when the link closes
 * @property {(tr: RTCRtpTransceiver, kind: string) => void} [preferCodec]
 * @property {PassthroughLink} [passthrough] forward encoded frames instead of sending tracks
 * @property {boolean} [standby] a hot standby link (standby.js): negotiated and kept up, but the
 *   worker writes nothing to it until promote()
 */

/**
 * @typedef {object} PassthroughLink
 * @property {import('./relay-passthrough.js').PassthroughRelay} relay
 * @property {() => Promise<Map<string, import('./relay-sdp.js').UpstreamCodec>>} codecs the upstream's, once negotiated
 */

export class ChildLink {
  /** @param {ChildOptions} opts */
  constructor(opts) {
    this.peer = opts.peer;
    this._opts = opts;
    this.pc = new RTCPeerConnection({ iceServers: opts.iceServers });
    /** Sender of each kind. @type {Map<string, RTCRtpSender>} */
    this.senders = new Map();
    /** Remote candidates that arrived before the answer. @type {RTCIceCandidateInit[]} */
    this._pending = [];
    this._chain = Promise.resolve();
    this._closed = false;
    /** Last counters read, reported when the link closes. */
    this._counters = { bytes: 0, packets: 0 };
    /** Whether this is an idle standby link, not promoted yet. */
    this.standby = !!opts.standby;
    this._promoted = false;
    /** What the last getStats said of the upload to this child (uplink.js). @type {LinkFigures|null} */
    this.link = null;
  }

  /** Whether the link has been closed. */
  get closed() {
    return this._closed;
  }

  /**
   * Starts media on a standby link: the worker writes to it from its cached
   * GOP on (at once, or when the link comes up), so the child decodes
   * without waiting for a keyframe; a re-encoding link gets the tab's
   * tracks, which play now, by kind.
   * @param {Map<string, MediaStreamTrack>} [tracks]
   */
  promote(tracks = new Map()) {
    if (!this.standby) return;
    this.standby = false;
    this._promoted = true;
    const pass = this._opts.passthrough;
    if (pass && this.connected) pass.relay.childLive(this.peer, this.pc, true);
    // Re-encoding (Firefox, Safari): the idle senders have no track, so
    // nothing was encoded or sent; the tab's tracks start them now, and
    // a fresh encoder begins with a keyframe.
    if (!pass) for (const track of tracks.values()) this.setTrack(track);
  }

  /** How this link relays: 'pass-through' or 're-encode'. */
  get mode() {
    return this._opts.passthrough ? 'pass-through' : 're-encode';
  }

  /** Whether media can flow to the child. */
  get connected() {
    const pc = this.pc;
    return pc.connectionState === 'connected' ||
      pc.iceConnectionState === 'connected' || pc.iceConnectionState === 'completed';
  }

  /** Adds the transceivers and sends the offer. */
  start() {
    const pc = this.pc;
    setLink(pc, newLinkId());
    const stream = new MediaStream();
    const pass = this._opts.passthrough;
    for (const kind of this._opts.kinds) {
      if (pass) {
        const tr = pc.addTransceiver(kind, { direction: 'sendonly', streams: [stream] });
        pass.relay.addSender(this.peer, kind, tr.sender); // at once: later is "too late"
        this.senders.set(kind, tr.sender);
        continue;
      }
      // A re-encoding standby link's senders stay track-less until
      // promote(): negotiated, but no encoder runs and no RTP goes out.
      const track = this.standby ? undefined : this._opts.tracks.get(kind);
      if (track) stream.addTrack(track);
      const tr = pc.addTransceiver(track ?? kind, { direction: 'sendonly', streams: [stream] });
      this._opts.preferCodec?.(tr, kind);
      this.senders.set(kind, tr.sender);
    }
    pc.onicecandidate = (ev) => {
      if (this._closed || !ev.candidate || !ev.candidate.candidate) return;
      this._opts.send(stamped(pc, { kind: SignalKind.CANDIDATE, candidate: ev.candidate.toJSON() }));
    };
    pc.onconnectionstatechange = () => {
      // A child that cannot be reached is the server's to re-place; it
      // reports the stall itself. Free the slot's resources here.
      if (pc.connectionState === 'failed') this.close();
      if (pc.connectionState === 'connected' && pass && !this.standby) pass.relay.childLive(this.peer, pc, this._promoted);
    };
    this._run(async () => {
      if (pass) {
        const sdp = await passthroughOffer(pc, await pass.codecs());
        if (this._closed) return;
        await pc.setLocalDescription({ type: 'offer', sdp });
      } else {
        await pc.setLocalDescription(await pc.createOffer());
      }
      if (!this._closed && pc.localDescription) {
        this._opts.send(stamped(pc, { kind: SignalKind.OFFER, sdp: pc.localDescription.sdp }));
      }
    });
  }

  /** @param {Signal} sig the child's answer or candidate */
  onSignal(sig) {
    const pc = this.pc;
    if (!ofLink(pc, sig)) return; // the child's answer to a connection replaced since
    this._run(async () => {
      if (sig.kind === SignalKind.ANSWER) {
        // A pass-through link's sending estimate starts high enough for a
        // GOP burst (withSendBitrates); a re-encoding one's encoder adapts.
        const sdp = this._opts.passthrough ? withSendBitrates(sig.sdp ?? '') : sig.sdp;
        await pc.setRemoteDescription({ type: 'answer', sdp });
        for (const c of this._pending.splice(0)) await addCandidate(pc, c);
      } else if (sig.kind === SignalKind.CANDIDATE && sig.candidate) {
        if (pc.remoteDescription) await addCandidate(pc, sig.candidate);
        else if (this._pending.length < MAX_EDGE_CANDIDATES) this._pending.push(sig.candidate); // a child that never answers
      }
    });
  }

  /**
   * Sends `track` to the child from now on, in place of whatever its kind's
   * sender carried: no renegotiation, the child notices only a short gap.
   * @param {MediaStreamTrack} track
   */
  setTrack(track) {
    if (this._opts.passthrough || this.standby) return; // the worker follows the tab's new parent; an idle link sends nothing
    const sender = this.senders.get(track.kind);
    if (!sender || this._closed || sender.track === track) return;
    sender.replaceTrack(track).catch((err) => {
      console.warn('canopy: replaceTrack for child', this.peer, 'failed:', err);
    });
  }

  /** @returns {Promise<{bytes: number, packets: number}>} bytes and packets sent to the child so far */
  async counters() {
    if (this._closed) return { bytes: 0, packets: 0 };
    let bytes = 0;
    let packets = 0;
    try {
      const report = await this.pc.getStats();
      report.forEach((r) => {
        if (r.type === 'outbound-rtp') {
          bytes += r.bytesSent ?? 0;
          packets += r.packetsSent ?? 0;
        }
      });
      this.link = readLink(report, this.link?.minRttMs ?? 0);
    } catch {
      return this._counters;
    }
    // Counted in the owner's base once closed; report 0 from then on.
    if (this._closed) return { bytes: 0, packets: 0 };
    this._counters = { bytes, packets };
    return this._counters;
  }

  /** Closes the connection; the owner's onClosed runs once. */
  close() {
    if (this._closed) return;
    this._closed = true;
    const pc = this.pc;
    pc.onicecandidate = pc.onconnectionstatechange = null;
    pc.close();
    this._opts.passthrough?.relay.removeChild(this.peer);
    this._opts.onClosed(this._counters);
  }

  /** Serialises SDP and candidate handling. @param {() => Promise<void>} step */
  _run(step) {
    this._chain = this._chain.then(() => (this._closed ? undefined : step())).catch((err) => {
      console.warn('canopy: signaling with child', this.peer, 'failed:', err);
    });
  }
}

/** @param {RTCPeerConnection} pc @param {RTCIceCandidateInit} c */
async function addCandidate(pc, c) {
  try {
    await pc.addIceCandidate(c);
  } catch (err) {
    console.warn('canopy: bad remote candidate from a child:', err);
  }
}
