// CanopyClient: a browser viewer in a Canopy tree. It keeps one WebSocket to
// the directory server and one RTCPeerConnection to its current parent, which
// offers send-only; the client answers, trickles ICE, and reconnects on its
// own. With capacity it also relays: for each child the server attaches it
// offers what it receives. In Chromium it passes the encoded frames through
// unchanged (relay-passthrough.js: no decode, no encode, and its hello says
// so); elsewhere it sends the decoded tracks, re-encoding them, and swaps
// them in place with replaceTrack when its own parent changes. Either way its
// children stay connected. The media never passes through the server.

import { Code, Kind, MAX_EDGE_CANDIDATES, Role, SERVER_TYPES, SignalKind, Type, VERSION, decode, encode } from './protocol.js';
import { backoffDelay } from './backoff.js';
import { PlaybackMonitor } from './monitor.js';
import { kbps } from './format.js';
import { DEFAULT_RELAY_CAPACITY } from './relaypolicy.js';
import { ChildLink, preferCodec } from './relay.js';
import { PassthroughRelay, receivedCodecs, waitForCodecs } from './relay-passthrough.js';

/** @typedef {import('./protocol.js').Message} Message */
/** @typedef {import('./protocol.js').ICEServer} ICEServer */
/** @typedef {'connecting'|'live'|'reconnecting'|'offline'|'ended'|'closed'} State */

/** How often the client samples its connections' statistics. */
export const SAMPLE_INTERVAL_MS = 1000;
/** How often it reports them to the server (protocol stats message). */
export const REPORT_INTERVAL_MS = 5000;

/**
 * @typedef {object} Stats
 * @property {number} framesDecoded video frames decoded since the client started, over every parent
 * @property {number} framesDropped
 * @property {number} [videoWidth]
 * @property {number} [videoHeight]
 * @property {number} bytesReceived video bytes since start
 * @property {number} packetsReceived video packets since start
 * @property {number} packetsLost video packets since start
 * @property {number} jitter video jitter, seconds
 * @property {number} audioPacketsReceived since start
 * @property {number} audioBytesReceived since start
 * @property {number} depth depth as the last parent message gave it
 * @property {number} [rttMs] round trip to the parent on the selected candidate pair
 * @property {number} [playoutDelayMs] average time a frame spent in the jitter buffer
 * @property {number} bytesRelayed bytes sent to children since start
 * @property {number} packetsRelayed packets sent to children since start
 * @property {number} children children connected now
 * @property {number} capacity children this tab offered to feed
 */

/**
 * What the client measured at its last sample: Stats plus rates.
 * @typedef {Stats & {state: State, parent: string|null, bitrateKbps: number,
 *   relayBitrateKbps: number, latencyMs?: number, stallMs: number, firstFrameMs?: number,
 *   relayMode: 'pass-through'|'re-encode'}} Snapshot
 */

/**
 * @typedef {object} ClientOptions
 * @property {string} [server] http(s) origin of the server; location.origin by default
 * @property {string} stream
 * @property {string} [role] 'viewer' by default
 * @property {string} [kind] 'browser' by default
 * @property {number} [capacity] children this tab offers to feed; DEFAULT_RELAY_CAPACITY by default, 0 opts out
 * @property {string} [token]
 * @property {boolean} [passthrough] false relays by re-encoding even where pass-through works
 * @property {boolean} [private] private mode: connect through TURN relay candidates only, so no other
 *   peer learns this browser's address, and relay to nobody (the server enforces both)
 */

/** Counters of one connection, summed over its RTP streams. */
function zeroCounters() {
  return {
    framesDecoded: 0, framesDropped: 0, bytesReceived: 0, packetsReceived: 0, packetsLost: 0,
    audioPacketsReceived: 0, audioBytesReceived: 0,
  };
}
/** @typedef {ReturnType<typeof zeroCounters>} Counters */

/**
 * Events: 'statechange' (detail {state, reason}), 'track' (detail {track,
 * stream}), 'error' (detail {code, reason}), 'welcome' (detail: the message),
 * 'parentchange' (detail {parent, depth}), 'stalled' (detail {parent}),
 * 'children' (detail {count}), 'stats' (detail: a Snapshot, every second).
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
    this.capacity = opts.capacity ?? DEFAULT_RELAY_CAPACITY;
    this.token = opts.token;
    /** Private mode: relay-only ICE and no children; asked for, or set by the server's welcome. */
    this.private = !!opts.private;
    if (this.private) this.capacity = 0;
    /**
     * The pass-through relay (Chromium), null where this tab relays by
     * re-encoding (or never relays: private mode). Started at once so its
     * worker runs before the first hello.
     * @type {PassthroughRelay|null}
     */
    this.relay = opts.passthrough === false || this.private ? null : PassthroughRelay.create();

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
    /** Children this tab feeds, by peer id. @type {Map<string, ChildLink>} */
    this.children = new Map();
    /** The last sample's figures; null before the first. @type {Snapshot|null} */
    this.snapshot = null;

    /** @type {WebSocket|null} */ this._ws = null;
    /** @type {ReturnType<typeof setTimeout>|null} */ this._retryTimer = null;
    /** @type {ReturnType<typeof setInterval>|null} */ this._sampleTimer = null;
    this._attempt = 0;
    /** Set when the server refused the credential: retrying cannot help, so the client stops. */
    this._refused = false;
    /** Connection whose media plays (and is relayed): the current parent's, or the previous one's until the new one's media flows. @type {RTCPeerConnection|null} */
    this._mediaPC = null;
    /** @type {string|null} */ this._mediaParent = null;
    /** Tracks of the current parent's connection, by kind. @type {Map<string, MediaStreamTrack>} */
    this._incoming = new Map();
    /** Remote candidates that arrived before the offer. @type {RTCIceCandidateInit[]} */ this._pending = [];
    /** Serialises SDP and candidate handling for the current pc. */ this._chain = Promise.resolve();
    this._started = false;
    this._startedAt = 0;
    /** Whether this client has ever been live (an offline after that is 'ended'). */
    this._wasLive = false;

    this._monitor = new PlaybackMonitor();
    /** Counters of connections already closed, so totals never go backwards. */
    this._base = zeroCounters();
    /** Last counters read from _countersPC. */
    this._last = zeroCounters();
    /** @type {RTCPeerConnection|null} */ this._countersPC = null;
    /** Relayed bytes and packets of children already closed. */
    this._relayBase = { bytes: 0, packets: 0 };
    this._stallMs = 0;
    /** @type {number|undefined} */ this._firstFrameMs = undefined;
    this._prev = { at: 0, bytes: 0, relayed: 0, jbDelay: 0, jbCount: 0 };
    this._sinceReport = 0;
    this._sampling = false;
  }

  /** Opens the connection; call once, after adding listeners. @returns {this} */
  start() {
    if (!this._started) {
      this._started = true;
      this._startedAt = performance.now();
      this._open();
      this._sampleTimer = setInterval(() => { this._sample(); }, SAMPLE_INTERVAL_MS);
    }
    return this;
  }

  /** Leaves the stream and releases everything; the client cannot be restarted. */
  close() {
    if (this.state === 'closed') return;
    if (this._retryTimer) clearTimeout(this._retryTimer);
    if (this._sampleTimer) clearInterval(this._sampleTimer);
    this._retryTimer = this._sampleTimer = null;
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      if (ws.readyState === WebSocket.OPEN) this._send({ type: Type.LEAVE }, ws);
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      ws.close(1000, 'leave');
    }
    this._closeChildren();
    this._closePC();
    this.relay?.close();
    this._setState('closed', '');
  }

  /**
   * Changes how many children this tab offers to feed. The server moves
   * children beyond the new capacity elsewhere (make before break) and may
   * give new ones up to it; this tab's own playback is untouched. A later
   * hello (a reconnect) carries the new capacity too.
   * @param {number} capacity
   */
  setCapacity(capacity) {
    if (this.private) capacity = 0; // a private viewer relays to nobody
    if (capacity === this.capacity) return;
    this.capacity = capacity;
    if (this.state === 'closed' || !this._started) return;
    const ws = this._ws;
    if (ws && ws.readyState === WebSocket.OPEN && this.id) {
      this._send({ type: Type.CAPACITY, capacity }, ws);
    }
  }

  /** @param {State} state @param {string} [reason] */
  _setState(state, reason = '') {
    if (this.state === 'closed') return;
    if (state === this.state && reason === this.reason) return;
    this.state = state;
    this.reason = reason;
    if (state === 'live') {
      this._attempt = 0;
      this._wasLive = true;
    }
    this.dispatchEvent(new CustomEvent('statechange', { detail: { state, reason } }));
  }

  _open() {
    if (this.state === 'closed') return;
    const ws = new WebSocket(this.url);
    this._ws = ws;
    ws.onopen = () => {
      // The hello says how this tab relays: wait for the relay's worker.
      void (this.relay?.started ?? Promise.resolve()).then(() => this._send({
        type: Type.HELLO, v: VERSION, role: this.role, kind: this.kind,
        stream: this.streamName, capacity: this.capacity, token: this.token, private: this.private,
        passthrough: !this.private && this.relayMode === 'pass-through',
      }, ws));
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
      // The server has dropped us and re-attached our children elsewhere.
      this._closeChildren();
      if (this._refused) return; // 'offline' with the server's reason; no retry
      // An offline stream stays 'offline' while we keep asking in the background.
      if (this.state !== 'offline' && this.state !== 'ended') this._setState('reconnecting', 'lost the server');
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
        if (msg.private) { // the server's -privacy: keep to it on reconnects too
          this.private = true;
          this.capacity = 0;
        }
        this.dispatchEvent(new CustomEvent('welcome', { detail: msg }));
        if (this.state === 'offline' && this.reason === 'stream not found') this._setState('connecting');
        return;
      case Type.PARENT:
        this._newParent(/** @type {string} */ (msg.peer), msg.depth ?? 0);
        return;
      case Type.SIGNAL: {
        if (!msg.signal) return;
        const child = this.children.get(/** @type {string} */ (msg.peer));
        if (child) {
          child.onSignal(msg.signal);
          return;
        }
        if (msg.peer !== this.parentId || !this.pc) return;
        this._onSignal(this.pc, msg.signal);
        return;
      }
      case Type.ATTACH:
        this._attachChild(/** @type {string} */ (msg.peer));
        return;
      case Type.DETACH:
        if (this.children.has(/** @type {string} */ (msg.peer))) {
          this._detachChild(/** @type {string} */ (msg.peer));
          return;
        }
        if (msg.peer !== this.parentId) {
          if (msg.peer === this._mediaParent) this._dropMedia(); // the old edge of a move
          this._updateLive();
          return;
        }
        this._closePC();
        this.parentId = null;
        this._monitor.setParent(null, performance.now());
        this._setState('reconnecting', 'waiting for a new parent');
        return;
      case Type.OFFLINE:
        this._closePC();
        this.parentId = null;
        this._monitor.setParent(null, performance.now());
        this._setState(this._wasLive ? 'ended' : 'offline', msg.reason ?? '');
        return;
      case Type.ERROR: {
        const code = msg.code ?? Code.INTERNAL;
        const reason = msg.reason ?? '';
        this.dispatchEvent(new CustomEvent('error', { detail: { code, reason } }));
        if (code === Code.UNAUTHORIZED || code === Code.UNAVAILABLE) {
          // The server closes after this; the same token (or a private
          // hello to a server without TURN) would be refused again.
          this._refused = true;
          this._setState(this._wasLive ? 'ended' : 'offline', code === Code.UNAVAILABLE ? reason : `not authorized: ${reason}`);
          return;
        }
        if (code === Code.NOT_FOUND) {
          // Stay 'offline' and ask again with backoff: the stream may start later.
          this._setState(this._wasLive ? 'ended' : 'offline', 'stream not found');
          this._ws?.close(4000, 'retry');
        }
        return;
      }
    }
  }

  /**
   * A new parent will offer. Make before break: the connection that is
   * playing stays open (the server keeps the old edge until this client
   * reports 'live' from the new parent, or a few seconds pass), and the
   * picture switches once the new connection's media arrives.
   * @param {string} peer @param {number} depth
   */
  _newParent(peer, depth) {
    const prev = this.pc;
    const keep = this._mediaPC && isConnected(this._mediaPC) ? this._mediaPC : null;
    if (prev && prev !== keep) this._dropPC(prev); // never played, or no longer can
    if (this._mediaPC && this._mediaPC !== keep) this._dropPC(this._mediaPC);
    this.parentId = peer;
    this.depth = depth;
    this._monitor.setParent(peer, performance.now());
    if (!this._mediaPC) {
      this._setState(this.state === 'connecting' || this.state === 'offline' ? 'connecting' : 'reconnecting',
        'joining the tree');
    }
    this.dispatchEvent(new CustomEvent('parentchange', { detail: { parent: peer, depth } }));
    // Private mode: relay candidates only, so the parent sees the TURN
    // server's address, never this browser's.
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, iceTransportPolicy: this.private ? 'relay' : 'all' });
    this.pc = pc;
    this._incoming = new Map();
    this._pending = [];
    this._chain = Promise.resolve();
    pc.onicecandidate = (ev) => {
      if (pc !== this.pc || !ev.candidate || !ev.candidate.candidate) return; // skip end-of-candidates
      this._send({ type: Type.SIGNAL, peer, signal: { kind: SignalKind.CANDIDATE, candidate: ev.candidate.toJSON() } });
    };
    pc.ontrack = (ev) => this._onTrack(pc, peer, ev.track);
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
        else if (this._pending.length < MAX_EDGE_CANDIDATES) this._pending.push(sig.candidate); // the server bounds an edge's too
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

  /**
   * @param {RTCPeerConnection} pc
   * @param {string} peer the parent pc connects to
   * @param {MediaStreamTrack} track
   */
  _onTrack(pc, peer, track) {
    if (pc !== this.pc) return;
    const receiver = pc.getReceivers().find((r) => r.track === track);
    if (receiver) this.relay?.receive(pc, receiver);
    this._incoming.set(track.kind, track);
    track.addEventListener('unmute', () => {
      if (pc === this.pc && pc !== this._mediaPC) this._switchTo(pc, peer);
      this._updateLive();
    });
    track.addEventListener('mute', () => this._updateLive());
    track.addEventListener('ended', () => this._updateLive());
    // Switch once media flows (Chromium unmutes a remote track on its first
    // packet), or at once when nothing else is playing.
    if (pc === this._mediaPC) this._addTrack(track);
    else if (!track.muted || !this._mediaPC) this._switchTo(pc, peer);
    this._updateLive();
  }

  /**
   * Shows and relays pc's tracks from now on, and closes the connection
   * that played before.
   * @param {RTCPeerConnection} pc
   * @param {string} peer
   */
  _switchTo(pc, peer) {
    const old = this._mediaPC;
    this._mediaPC = pc;
    this._mediaParent = peer;
    this.relay?.activate(pc);
    this.stream = new MediaStream();
    for (const t of this._incoming.values()) this._addTrack(t);
    if (old && old !== pc) this._dropPC(old);
  }

  /** Adds a track of the playing connection to the stream, the page and the children. @param {MediaStreamTrack} track */
  _addTrack(track) {
    if (!this.stream) this.stream = new MediaStream();
    for (const old of this.stream.getTracks()) {
      if (old.kind === track.kind && old !== track) this.stream.removeTrack(old);
    }
    if (!this.stream.getTracks().includes(track)) this.stream.addTrack(track);
    // Children keep their connections; only what they are sent changes.
    for (const child of this.children.values()) child.setTrack(track);
    this.dispatchEvent(new CustomEvent('track', { detail: { track, stream: this.stream } }));
  }

  /** Live when the playing connection is up and its video track is receiving. */
  _updateLive() {
    if (this.state === 'closed' || this.state === 'offline' || this.state === 'ended') return;
    const m = this._mediaPC;
    const receiving = !!m && isConnected(m) && !!this.stream &&
      this.stream.getVideoTracks().some((t) => t.readyState === 'live' && !t.muted);
    if (receiving) {
      this._setState('live');
    } else if (this.pc && this.pc.connectionState === 'failed') {
      // The parent is unreachable; rejoining lets the server place us again.
      this._setState('reconnecting', 'connection to the parent failed');
      this._rejoin();
    } else if (this.state === 'live') {
      this._setState('reconnecting', m && isConnected(m) ? 'video stalled' : 'connection interrupted');
    }
  }

  /** Drops the socket so onclose reconnects with backoff and a fresh hello. */
  _rejoin() {
    this._closePC();
    this.parentId = null;
    this._ws?.close(4000, 'rejoin');
  }

  /** Closes every connection upstream: the current parent's and one still playing. */
  _closePC() {
    const pc = this.pc;
    this.pc = null;
    this._pending = [];
    this._incoming = new Map();
    if (pc) this._dropPC(pc);
    this._dropMedia();
  }

  /** Closes the connection that plays, when it is not the current parent's. */
  _dropMedia() {
    const m = this._mediaPC;
    this._mediaPC = null;
    this._mediaParent = null;
    if (m && m !== this.pc) this._dropPC(m);
  }

  /** @param {RTCPeerConnection} pc */
  _dropPC(pc) {
    if (pc === this._mediaPC) {
      this._mediaPC = null;
      this._mediaParent = null;
    }
    pc.onicecandidate = pc.ontrack = pc.onconnectionstatechange = pc.oniceconnectionstatechange = null;
    pc.close();
  }

  // Relaying.

  /** How this tab relays: 'pass-through' (encoded frames, Chromium) or 're-encode'. */
  get relayMode() {
    return this.relay?.ready ? 'pass-through' : 're-encode';
  }

  /**
   * What a child's link needs to pass frames through, or undefined to
   * re-encode. @param {string[]} kinds
   * @returns {import('./relay.js').PassthroughLink|undefined}
   */
  _passthroughLink(kinds) {
    const relay = this.relay;
    if (!relay?.ready) return undefined;
    return {
      relay,
      codecs: () => waitForCodecs(() => receivedCodecs(this._mediaPC, kinds), () => this.state === 'closed'),
    };
  }

  /** The tracks that play now, by kind. @returns {Map<string, MediaStreamTrack>} */
  _currentTracks() {
    /** @type {Map<string, MediaStreamTrack>} */
    const out = new Map();
    if (this.stream && this._mediaPC) {
      for (const t of this.stream.getTracks()) out.set(t.kind, t);
    }
    return out;
  }

  /** @param {string} peer */
  _attachChild(peer) {
    if (this.capacity <= 0) {
      console.warn('canopy: asked to relay with capacity 0; ignoring attach for', peer);
      return;
    }
    this.children.get(peer)?.close();
    const kinds = this.tracks.length ? [...new Set(this.tracks.map((t) => t.kind))] : ['video', 'audio'];
    const child = new ChildLink({
      peer,
      iceServers: this.iceServers,
      kinds,
      tracks: this._currentTracks(),
      send: (signal) => this._send({ type: Type.SIGNAL, peer, signal }),
      onClosed: (counters) => {
        if (this.children.get(peer) !== child) return;
        this.children.delete(peer);
        this._relayBase.bytes += counters.bytes;
        this._relayBase.packets += counters.packets;
        this.dispatchEvent(new CustomEvent('children', { detail: { count: this.children.size } }));
      },
      preferCodec,
      passthrough: this._passthroughLink(kinds),
    });
    this.children.set(peer, child);
    this.dispatchEvent(new CustomEvent('children', { detail: { count: this.children.size } }));
    child.start();
  }

  /** @param {string} peer */
  _detachChild(peer) {
    this.children.get(peer)?.close();
  }

  _closeChildren() {
    for (const child of [...this.children.values()]) child.close();
  }

  // Measuring.

  /**
   * Statistics of the connections: counters since the client started (over
   * every parent it had) and the current parent's figures.
   * @returns {Promise<Stats>}
   */
  async stats() {
    return (await this._read()).stats;
  }

  /**
   * @returns {Promise<{stats: Stats, jbDelay: number, jbCount: number}>} stats and the
   *   current connection's jitter-buffer totals (seconds, frames), for the latency estimate
   */
  async _read() {
    const pc = this.pc;
    const cur = zeroCounters();
    /** @type {Partial<Stats>} */
    const extra = {};
    let jitter = 0;
    let jbDelay = 0;
    let jbCount = 0;
    if (pc) {
      const report = await pc.getStats();
      let pairId = '';
      report.forEach((r) => {
        if (r.type === 'transport' && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId;
      });
      report.forEach((r) => {
        if (r.type === 'inbound-rtp') {
          const kind = r.kind ?? r.mediaType;
          if (kind === 'video') {
            cur.framesDecoded += r.framesDecoded ?? 0;
            cur.framesDropped += r.framesDropped ?? 0;
            cur.bytesReceived += r.bytesReceived ?? 0;
            cur.packetsReceived += r.packetsReceived ?? 0;
            cur.packetsLost += Math.max(0, r.packetsLost ?? 0);
            jitter = Math.max(jitter, r.jitter ?? 0);
            jbDelay += r.jitterBufferDelay ?? 0;
            jbCount += r.jitterBufferEmittedCount ?? 0;
            if (r.frameWidth) extra.videoWidth = r.frameWidth;
            if (r.frameHeight) extra.videoHeight = r.frameHeight;
          } else if (kind === 'audio') {
            cur.audioPacketsReceived += r.packetsReceived ?? 0;
            cur.audioBytesReceived += r.bytesReceived ?? 0;
          }
        } else if (r.type === 'candidate-pair' && r.currentRoundTripTime !== undefined) {
          if (pairId ? r.id === pairId : r.nominated && r.state === 'succeeded') {
            extra.rttMs = Math.round(r.currentRoundTripTime * 1000);
          }
        }
      });
    }
    // Fold a finished connection's counters into the base, once, and only
    // from a reading of the connection that is still current.
    if (pc === this.pc) {
      if (pc !== this._countersPC) {
        for (const k of /** @type {(keyof Counters)[]} */ (Object.keys(this._base))) this._base[k] += this._last[k];
        this._countersPC = pc;
      }
      this._last = cur;
    }
    let bytesRelayed = this._relayBase.bytes;
    let packetsRelayed = this._relayBase.packets;
    const children = [...this.children.values()];
    const relayed = await Promise.all(children.map((c) => c.counters()));
    for (const r of relayed) {
      bytesRelayed += r.bytes;
      packetsRelayed += r.packets;
    }
    const total = zeroCounters();
    for (const k of /** @type {(keyof Counters)[]} */ (Object.keys(total))) total[k] = this._base[k] + this._last[k];
    /** @type {Stats} */
    const out = {
      ...total, ...extra, jitter, depth: this.depth, bytesRelayed, packetsRelayed,
      children: children.filter((c) => c.connected).length, capacity: this.capacity,
    };
    return { stats: out, jbDelay, jbCount };
  }

  /** One sample: rates, live/stalled verdicts, and every few seconds a report. */
  async _sample() {
    if (this._sampling || this.state === 'closed') return;
    this._sampling = true;
    try {
      const pc = this.pc;
      const { stats: s, ...jb } = await this._read();
      if (/** @type {State} */ (this.state) === 'closed') return;
      const now = performance.now();
      const dt = this._prev.at ? now - this._prev.at : 0;
      const bytes = s.bytesReceived + s.audioBytesReceived;
      const bitrateKbps = kbps(this._prev.bytes, bytes, dt);
      const relayBitrateKbps = kbps(this._prev.relayed, s.bytesRelayed, dt);
      /** @type {number|undefined} */
      let latencyMs;
      if (jb.jbCount > this._prev.jbCount && jb.jbDelay >= this._prev.jbDelay) {
        // Time frames waited in the jitter buffer over the interval, plus half a round trip.
        latencyMs = ((jb.jbDelay - this._prev.jbDelay) / (jb.jbCount - this._prev.jbCount)) * 1000 + (s.rttMs ?? 0) / 2;
      }
      this._prev = { at: now, bytes, relayed: s.bytesRelayed, jbDelay: jb.jbDelay, jbCount: jb.jbCount };

      const expected = this.state !== 'offline' && this.state !== 'ended' && !!this.parentId;
      const v = this._monitor.sample({
        now,
        frames: pc && pc === this.pc ? this._last.framesDecoded : 0,
        connected: !!pc && pc === this.pc && isConnected(pc),
        expected,
      });
      this._stallMs += v.stallMs;
      if (v.live && this.parentId) {
        if (this._firstFrameMs === undefined) this._firstFrameMs = now - this._startedAt;
        this._send({ type: Type.LIVE, peer: this.parentId });
      }
      // Repeated every few seconds while the parent stays silent, and sent
      // for a parent that never connects at all (monitor.js): the server
      // moves this client only on a report.
      if (v.stalled && this.parentId) {
        this._send({ type: Type.STALLED, peer: this.parentId });
        this.dispatchEvent(new CustomEvent('stalled', { detail: { parent: this.parentId } }));
      }

      /** @type {Snapshot} */
      const snap = {
        ...s, state: this.state, parent: this.parentId, bitrateKbps, relayBitrateKbps, relayMode: this.relayMode,
        stallMs: this._stallMs, firstFrameMs: this._firstFrameMs,
      };
      if (latencyMs !== undefined) snap.latencyMs = latencyMs;
      this.snapshot = snap;
      this.dispatchEvent(new CustomEvent('stats', { detail: snap }));

      this._sinceReport += SAMPLE_INTERVAL_MS;
      if (this._sinceReport >= REPORT_INTERVAL_MS) {
        this._sinceReport = 0;
        this._report(snap);
      }
    } catch (err) {
      console.warn('canopy: reading statistics failed:', err);
    } finally {
      this._sampling = false;
    }
  }

  /** Sends a protocol stats message. @param {Snapshot} s */
  _report(s) {
    const ms = (/** @type {number|undefined} */ v) => (v !== undefined && Number.isFinite(v) && v > 0 ? Math.min(v, 1e12) : 0);
    this._send({
      type: Type.STATS,
      stats: {
        framesDecoded: s.framesDecoded,
        bytesReceived: s.bytesReceived + s.audioBytesReceived,
        packetsReceived: s.packetsReceived + s.audioPacketsReceived,
        packetsLost: s.packetsLost,
        jitterMs: ms(s.jitter * 1000),
        stallMs: ms(s.stallMs),
        firstFrameMs: ms(s.firstFrameMs),
        bitrateKbps: ms(s.bitrateKbps),
        bytesRelayed: s.bytesRelayed,
        packetsRelayed: s.packetsRelayed,
        relayBitrateKbps: ms(s.relayBitrateKbps),
        children: s.children,
      },
    });
  }
}

/** @param {RTCPeerConnection} pc */
function isConnected(pc) {
  return pc.connectionState === 'connected' ||
    pc.iceConnectionState === 'connected' || pc.iceConnectionState === 'completed';
}
