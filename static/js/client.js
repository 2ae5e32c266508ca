// CanopyClient: a browser viewer in a Canopy tree. It keeps one WebSocket to
// the directory server and one RTCPeerConnection to its current parent, which
// offers send-only; the client answers, trickles ICE, and reconnects on its
// own. The media never passes through the server.

import { Code, Kind, Role, SERVER_TYPES, SignalKind, Type, VERSION, decode, encode } from './protocol.js';
import { backoffDelay } from './backoff.js';

/** @typedef {import('./protocol.js').Message} Message */
/** @typedef {import('./protocol.js').ICEServer} ICEServer */
/** @typedef {'connecting'|'live'|'reconnecting'|'offline'|'closed'} State */

/**
 * @typedef {object} Stats
 * @property {number} framesDecoded
 * @property {number} framesDropped
 * @property {number} [videoWidth]
 * @property {number} [videoHeight]
 * @property {number} bytesReceived video bytes
 * @property {number} packetsLost video packets
 * @property {number} jitter video jitter, seconds
 * @property {number} audioPacketsReceived
 * @property {number} audioBytesReceived
 * @property {number} depth depth as the last parent message gave it
 * @property {number} [rttMs] round trip on the selected candidate pair
 */

/**
 * @typedef {object} ClientOptions
 * @property {string} [server] http(s) origin of the server; location.origin by default
 * @property {string} stream
 * @property {string} [role] 'viewer' by default
 * @property {string} [kind] 'browser' by default
 * @property {number} [capacity] children this tab offers to feed; 0 by default
 * @property {string} [token]
 */

/**
 * Events: 'statechange' (detail {state, reason}), 'track' (detail {track,
 * stream}), 'error' (detail {code, reason}), 'welcome' (detail: the message).
 */
export class CanopyClient extends EventTarget {
  /** @param {ClientOptions} opts */
  constructor(opts) {
    super();
    const server = opts.server ?? globalThis.location?.origin;
    if (!server) throw new Error('canopy: no server given and no location to default to');
    const url = new URL('/ws', server);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    /** WebSocket URL of the directory. */
    this.url = url.toString();
    this.streamName = opts.stream;
    this.role = opts.role ?? Role.VIEWER;
    this.kind = opts.kind ?? Kind.BROWSER;
    this.capacity = opts.capacity ?? 0;
    this.token = opts.token;

    /** @type {State} */
    this.state = 'connecting';
    /** Why the state is what it is, for people ('stream not found', …). */
    this.reason = '';
    /** This peer's id, from the last welcome. @type {string|null} */
    this.id = null;
    /** @type {ICEServer[]} */
    this.iceServers = [];
    /** Tracks the stream declares, from the last welcome. */
    this.tracks = /** @type {import('./protocol.js').Track[]} */ ([]);
    /** Id of the current parent. @type {string|null} */
    this.parentId = null;
    this.depth = 0;
    /** Connection to the current parent. @type {RTCPeerConnection|null} */
    this.pc = null;
    /** Tracks received from the current parent; replaced when a new parent's first track arrives. @type {MediaStream|null} */
    this.stream = null;

    /** @type {WebSocket|null} */ this._ws = null;
    /** @type {ReturnType<typeof setTimeout>|null} */ this._retryTimer = null;
    this._attempt = 0;
    /** @type {RTCPeerConnection|null} */ this._streamPC = null;
    /** Remote candidates that arrived before the offer. @type {RTCIceCandidateInit[]} */ this._pending = [];
    /** Serialises SDP and candidate handling for the current pc. */ this._chain = Promise.resolve();
    this._started = false;
  }

  /** Opens the connection; call once, after adding listeners. @returns {this} */
  start() {
    if (!this._started) {
      this._started = true;
      this._open();
    }
    return this;
  }

  /** Leaves the stream and releases everything; the client cannot be restarted. */
  close() {
    if (this.state === 'closed') return;
    if (this._retryTimer) clearTimeout(this._retryTimer);
    this._retryTimer = null;
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      if (ws.readyState === WebSocket.OPEN) this._send({ type: Type.LEAVE }, ws);
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      ws.close(1000, 'leave');
    }
    this._closePC();
    this._setState('closed', '');
  }

  /** @param {State} state @param {string} [reason] */
  _setState(state, reason = '') {
    if (this.state === 'closed') return;
    if (state === this.state && reason === this.reason) return;
    this.state = state;
    this.reason = reason;
    if (state === 'live') this._attempt = 0;
    this.dispatchEvent(new CustomEvent('statechange', { detail: { state, reason } }));
  }

  _open() {
    if (this.state === 'closed') return;
    const ws = new WebSocket(this.url);
    this._ws = ws;
    ws.onopen = () => {
      this._send({
        type: Type.HELLO, v: VERSION, role: this.role, kind: this.kind,
        stream: this.streamName, capacity: this.capacity, token: this.token,
      });
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      let msg;
      try {
        msg = decode(ev.data);
      } catch (err) {
        console.warn('canopy: dropping a bad message:', /** @type {Error} */ (err).message);
        return;
      }
      this._handle(msg);
    };
    ws.onclose = () => {
      if (this._ws !== ws) return;
      this._ws = null;
      // An offline stream stays 'offline' while we keep asking in the background.
      if (this.state !== 'offline') this._setState('reconnecting', 'lost the server');
      const delay = backoffDelay(this._attempt++);
      this._retryTimer = setTimeout(() => { this._retryTimer = null; this._open(); }, delay);
    };
    ws.onerror = () => {}; // onclose follows and does the work
  }

  /** @param {Message} msg @param {WebSocket|null} [ws] */
  _send(msg, ws = this._ws) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    try {
      ws.send(encode(msg));
    } catch (err) {
      console.warn('canopy: not sending an invalid message:', /** @type {Error} */ (err).message);
    }
  }

  /** @param {Message} msg */
  _handle(msg) {
    if (!SERVER_TYPES.has(msg.type)) return;
    switch (msg.type) {
      case Type.WELCOME:
        this.id = msg.id ?? null;
        this.iceServers = msg.iceServers ?? [];
        this.tracks = msg.tracks ?? [];
        this.dispatchEvent(new CustomEvent('welcome', { detail: msg }));
        if (this.state === 'offline' && this.reason === 'stream not found') this._setState('connecting');
        return;
      case Type.PARENT:
        this._newParent(/** @type {string} */ (msg.peer), msg.depth ?? 0);
        return;
      case Type.SIGNAL:
        if (msg.peer !== this.parentId || !this.pc || !msg.signal) return;
        this._onSignal(this.pc, msg.signal);
        return;
      case Type.DETACH:
        if (msg.peer !== this.parentId) return;
        this._closePC();
        this.parentId = null;
        this._setState('reconnecting', 'waiting for a new parent');
        return;
      case Type.OFFLINE:
        this._closePC();
        this.parentId = null;
        this._setState('offline', msg.reason ?? '');
        return;
      case Type.ERROR: {
        const code = msg.code ?? Code.INTERNAL;
        const reason = msg.reason ?? '';
        this.dispatchEvent(new CustomEvent('error', { detail: { code, reason } }));
        if (code === Code.NOT_FOUND) {
          // Stay 'offline' and ask again with backoff: the stream may start later.
          this._setState('offline', 'stream not found');
          this._ws?.close(4000, 'retry');
        }
        return;
      }
      case Type.ATTACH:
        // A browser with capacity 0 (the default) is never asked to feed a child.
        console.warn('canopy: this client does not relay; ignoring attach for', msg.peer);
        return;
    }
  }

  /** @param {string} peer @param {number} depth */
  _newParent(peer, depth) {
    this._closePC();
    this.parentId = peer;
    this.depth = depth;
    this._setState(this.state === 'live' || this.state === 'reconnecting' ? 'reconnecting' : 'connecting',
      'joining the tree');
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.pc = pc;
    this._pending = [];
    this._chain = Promise.resolve();
    pc.onicecandidate = (ev) => {
      if (pc !== this.pc || !ev.candidate || !ev.candidate.candidate) return; // skip end-of-candidates
      this._send({ type: Type.SIGNAL, peer, signal: { kind: SignalKind.CANDIDATE, candidate: ev.candidate.toJSON() } });
    };
    pc.ontrack = (ev) => this._onTrack(pc, ev.track);
    pc.onconnectionstatechange = () => this._updateLive();
    pc.oniceconnectionstatechange = () => this._updateLive();
  }

  /** @param {RTCPeerConnection} pc @param {import('./protocol.js').Signal} sig */
  _onSignal(pc, sig) {
    const peer = this.parentId;
    const step = async () => {
      if (pc !== this.pc) return;
      if (sig.kind === SignalKind.OFFER) {
        await pc.setRemoteDescription({ type: 'offer', sdp: sig.sdp });
        for (const c of this._pending.splice(0)) await this._addCandidate(pc, c);
        await pc.setLocalDescription(await pc.createAnswer());
        if (pc !== this.pc || !pc.localDescription) return;
        this._send({ type: Type.SIGNAL, peer: /** @type {string} */ (peer), signal: { kind: SignalKind.ANSWER, sdp: pc.localDescription.sdp } });
      } else if (sig.kind === SignalKind.CANDIDATE && sig.candidate) {
        if (pc.remoteDescription) await this._addCandidate(pc, sig.candidate);
        else this._pending.push(sig.candidate);
      }
    };
    this._chain = this._chain.then(step).catch((err) => {
      console.warn('canopy: signaling with the parent failed:', err);
    });
  }

  /** @param {RTCPeerConnection} pc @param {RTCIceCandidateInit} c */
  async _addCandidate(pc, c) {
    try {
      await pc.addIceCandidate(c);
    } catch (err) {
      console.warn('canopy: bad remote candidate:', err);
    }
  }

  /** @param {RTCPeerConnection} pc @param {MediaStreamTrack} track */
  _onTrack(pc, track) {
    if (pc !== this.pc) return;
    if (this._streamPC !== pc || !this.stream) {
      // First track from this parent: start a fresh stream so the page can
      // keep showing the old one until now.
      this.stream = new MediaStream();
      this._streamPC = pc;
    }
    for (const old of this.stream.getTracks()) {
      if (old.kind === track.kind && old !== track) this.stream.removeTrack(old);
    }
    this.stream.addTrack(track);
    track.addEventListener('unmute', () => this._updateLive());
    track.addEventListener('mute', () => this._updateLive());
    track.addEventListener('ended', () => this._updateLive());
    this.dispatchEvent(new CustomEvent('track', { detail: { track, stream: this.stream } }));
    this._updateLive();
  }

  /** Live when the pc is connected and a video track is receiving. */
  _updateLive() {
    const pc = this.pc;
    if (!pc || this.state === 'closed' || this.state === 'offline') return;
    const connected = pc.connectionState === 'connected' ||
      pc.iceConnectionState === 'connected' || pc.iceConnectionState === 'completed';
    const receiving = this._streamPC === pc && !!this.stream &&
      this.stream.getVideoTracks().some((t) => t.readyState === 'live' && !t.muted);
    if (connected && receiving) {
      this._setState('live');
    } else if (pc.connectionState === 'failed') {
      // The parent is unreachable; rejoining lets the server place us again.
      this._setState('reconnecting', 'connection to the parent failed');
      this._rejoin();
    } else if (this.state === 'live') {
      this._setState('reconnecting', connected ? 'video stalled' : 'connection interrupted');
    }
  }

  /** Drops the socket so onclose reconnects with backoff and a fresh hello. */
  _rejoin() {
    this._closePC();
    this.parentId = null;
    this._ws?.close(4000, 'rejoin');
  }

  _closePC() {
    const pc = this.pc;
    this.pc = null;
    this._pending = [];
    if (!pc) return;
    pc.onicecandidate = pc.ontrack = pc.onconnectionstatechange = pc.oniceconnectionstatechange = null;
    pc.close();
  }

  /**
   * Receive statistics of the current connection; zeros when there is none.
   * @returns {Promise<Stats>}
   */
  async stats() {
    /** @type {Stats} */
    const out = {
      framesDecoded: 0, framesDropped: 0, bytesReceived: 0, packetsLost: 0, jitter: 0,
      audioPacketsReceived: 0, audioBytesReceived: 0, depth: this.depth,
    };
    const pc = this.pc;
    if (!pc) return out;
    const report = await pc.getStats();
    let pairId = '';
    report.forEach((r) => {
      if (r.type === 'transport' && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId;
    });
    report.forEach((r) => {
      if (r.type === 'inbound-rtp') {
        const kind = r.kind ?? r.mediaType;
        if (kind === 'video') {
          out.framesDecoded += r.framesDecoded ?? 0;
          out.framesDropped += r.framesDropped ?? 0;
          out.bytesReceived += r.bytesReceived ?? 0;
          out.packetsLost += r.packetsLost ?? 0;
          out.jitter = Math.max(out.jitter, r.jitter ?? 0);
          if (r.frameWidth) out.videoWidth = r.frameWidth;
          if (r.frameHeight) out.videoHeight = r.frameHeight;
        } else if (kind === 'audio') {
          out.audioPacketsReceived += r.packetsReceived ?? 0;
          out.audioBytesReceived += r.bytesReceived ?? 0;
        }
      } else if (r.type === 'candidate-pair' && r.currentRoundTripTime !== undefined) {
        if (pairId ? r.id === pairId : r.nominated && r.state === 'succeeded') {
          out.rttMs = Math.round(r.currentRoundTripTime * 1000);
        }
      }
    });
    return out;
  }
}
