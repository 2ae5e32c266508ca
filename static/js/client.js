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
import { uplinkOf } from './uplink.js';
import { PassthroughRelay, receivedCodecs, waitForCodecs } from './relay-passthrough.js';
import { QUIET_FOR_MS, QUIET_SILENCE_MS, REFUSED_RETRY_MS, SILENCE_POLL_MS, STANDBY_PER_SLOT, SilenceWatch, StandbyUpstream, parentFailed, silenceLimit } from './standby.js';
import { FrameChecks, cannotVerify } from './framesig-client.js';
import { cannotDecode, offeredVideoCodecs } from './codecs.js';
import { ofLink, reoffered, setLink, stamped } from './link.js';

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
 * @property {import('./uplink.js').LinkFigures[]} links what each connected child link's stats say of the upload to it
 */

/**
 * What the client measured at its last sample: Stats plus rates.
 * @typedef {Stats & {state: State, parent: string|null, bitrateKbps: number,
 *   relayBitrateKbps: number, latencyMs?: number, stallMs: number, firstFrameMs?: number,
 *   relayMode: 'pass-through'|'re-encode'} & import('./framesig-client.js').FrameCheckSnapshot} Snapshot
 */

/**
 * @typedef {object} ClientOptions
 * @property {string} [server] http(s) origin of the server, or several separated by commas (tried in
 *   turn on connect and when resuming); location.origin by default
 * @property {string} stream
 * @property {string} [role] 'viewer' by default
 * @property {string} [kind] 'browser' by default
 * @property {number} [capacity] children this tab offers to feed; DEFAULT_RELAY_CAPACITY by default, 0 opts out
 * @property {string} [token]
 * @property {boolean} [passthrough] false relays by re-encoding even where pass-through works
 * @property {boolean} [private] private mode: connect through TURN relay candidates only, so no other
 *   peer learns this browser's address, and relay to nobody (the server enforces both)
 */

/**
 * How a dropped connection is resumed: at once, then after 250 ms doubling to
 * 2 s, the next server of the list each time, until the grace period the
 * welcome gave runs out (the same schedule as mesh/resume.go).
 */
export const RESUME_BACKOFF = Object.freeze({ base: 250, max: 2000 });
/** Messages held while resuming, at most (as the Go node's). */
export const MAX_PENDING = 256;

/**
 * Keepalive. A stopped server (SIGSTOP, a paused VM, a cut path) keeps its
 * socket open and silent, and a tab can neither send nor see WebSocket
 * pings. So a tab that has heard nothing from its server for `idle` ms
 * sends `ping`, which the server's edge answers at once with `pong`; a
 * ping unanswered for `pongTimeout` means the server is gone, and the tab
 * resumes as after a drop, on the next server of its list (as a Go node
 * does after 6 s of silence: mesh/transport.go). A WebSocket that is not
 * open after `connect` (a stopped server accepts the TCP connection and
 * never answers the upgrade) is given up for the next server, and a hello
 * not welcomed within `hello` (a join waits at its edge for an election up
 * to 15 s) too; `tick` is how often this is judged. Only an unanswered ping counts,
 * not silence: a hidden tab's timers run once a minute, and an idle viewer
 * may hear nothing for minutes.
 */
export const KEEPALIVE = Object.freeze({ idle: 2000, pongTimeout: 4000, connect: 6000, hello: 20000, tick: 1000 });

/**
 * What the keepalive does now (KEEPALIVE): 'ping', a reason to give the
 * connection up, or ''.
 * @param {{created: number, heard: number, pinged: number, welcomed: boolean}} a
 *   when the socket was made, last heard from (0: never) and last pinged, and whether it was welcomed
 * @param {boolean} opened @param {number} now
 * @returns {string}
 */
export function keepaliveVerdict(a, opened, now) {
  if (!opened) return now - a.created > KEEPALIVE.connect ? 'the connection did not open' : '';
  if (!a.welcomed) return now - a.heard > KEEPALIVE.hello ? 'no welcome' : '';
  if (a.pinged > a.heard) return now - a.pinged > KEEPALIVE.pongTimeout ? 'no pong' : '';
  return now - a.heard >= KEEPALIVE.idle ? 'ping' : '';
}

/**
 * The signaling WebSocket URLs of a server option: one http(s) origin or
 * several separated by commas.
 * @param {string} servers
 * @returns {string[]}
 */
export function signalingURLs(servers) {
  const out = [];
  for (const s of servers.split(',')) {
    const trimmed = s.trim();
    if (!trimmed) continue;
    const url = new URL('/ws', trimmed);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    out.push(url.toString());
  }
  if (!out.length) throw new Error('canopy: no server address');
  return out;
}

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
    /** WebSocket URLs of the directory's servers, tried in turn. */
    this.urls = signalingURLs(server);
    /** WebSocket URL of the server in use (the first until one fails). */
    this.url = this.urls[0];
    this._server = 0;
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
    // The same worker checks the source's signatures on every frame this
    // tab plays (framesig-client.js), relaying or not: private viewers and
    // re-encoding relays start it too, without forwarding.
    this.relay = PassthroughRelay.create({ forward: opts.passthrough !== false && !this.private });
    /** Source-signed frames: the stream's key, each parent's path, tampering reports. */
    this.frameChecks = new FrameChecks(this.relay, (m) => this._send(m));

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
    /** The resume token of the last welcome (or resume message); null: none, join afresh. @type {string|null} */
    this._resumeToken = null;
    /** How long the server keeps this peer's place after a drop, ms. */
    this._graceMs = 0;
    /** While resuming: when the grace period ends (performance.now()); 0 otherwise. */
    this._resumeUntil = 0;
    this._resumeAttempt = 0;
    /** The last resume attempt's server answered resume_live: try it again. */
    this._resumeSame = false;
    /** Messages held while resuming, sent once resumed. @type {Message[]} */
    this._held = [];
    /** Tracks of the current parent's connection, by kind. @type {Map<string, MediaStreamTrack>} */
    this._incoming = new Map();
    /** Remote candidates that arrived before the offer. @type {import('./protocol.js').Signal[]} */ this._pending = [];
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

    // Hot standby (standby.js).
    /** The link to this tab's standby parent, up and idle. @type {StandbyUpstream|null} */
    this.standby = null;
    /** Idle links this tab holds for children-to-be, by peer id. @type {Map<string, ChildLink>} */
    this.standbyChildren = new Map();
    /** Switches to a standby link, counted (a diagnostic the tests read). */
    this.standbySwitches = 0;
    /** The parent this tab left by switching itself, while the server may still refuse. @type {{peer: string, pc: RTCPeerConnection, depth: number}|null} */
    this._promotedFrom = null;
    this._refusedAt = -Infinity;
    this._silence = new SilenceWatch();
    /** When the server last said which parent went quiet (performance.now()). */
    this._quiet = { peer: '', at: 0 };
    /** @type {ReturnType<typeof setInterval>|null} */ this._silenceTimer = null;
    /** Wakes _checkSilence when a quiet parent's silence reaches QUIET_SILENCE_MS. @type {ReturnType<typeof setTimeout>|null} */
    this._quietWake = null;
  }

  /** Opens the connection; call once, after adding listeners. @returns {this} */
  start() {
    if (!this._started) {
      this._started = true;
      this._startedAt = performance.now();
      this._open();
      this._sampleTimer = setInterval(() => { this._sample(); }, SAMPLE_INTERVAL_MS);
      this._silenceTimer = setInterval(() => { this._checkSilence(); }, SILENCE_POLL_MS);
    }
    return this;
  }

  /** Leaves the stream and releases everything; the client cannot be restarted. */
  close() {
    if (this.state === 'closed') return;
    if (this._retryTimer) clearTimeout(this._retryTimer);
    if (this._sampleTimer) clearInterval(this._sampleTimer);
    if (this._silenceTimer) clearInterval(this._silenceTimer);
    if (this._quietWake) clearTimeout(this._quietWake);
    this._retryTimer = this._sampleTimer = this._silenceTimer = this._quietWake = null;
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

  /** Sends this tab's hello on ws. @param {WebSocket} ws */
  _sendHello(ws) {
    this._sendNow({
      type: Type.HELLO, v: VERSION, role: this.role, kind: this.kind,
      stream: this.streamName, capacity: this.capacity, token: this.token, private: this.private,
      passthrough: !this.private && this.relayMode === 'pass-through',
      // No worker to check and strip signatures: the server feeds this
      // tab from a parent that sends none (framesig-client.js).
      noVerify: (this.frameChecks.declaredNoVerify = cannotVerify(this.relay)),
      // Resuming: the place this token names, with every connection kept.
      resume: this._resumeUntil ? this._resumeToken ?? undefined : undefined,
    }, ws);
  }

  _open() {
    if (this.state === 'closed') return;
    /** @type {WebSocket} */
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) { // a URL the page may not reach (its CSP, say): the next server
      console.warn('canopy: cannot open', this.url, /** @type {Error} */ (err).message);
      this._server = (this._server + 1) % this.urls.length;
      this.url = this.urls[this._server];
      this._retryTimer = setTimeout(() => { this._retryTimer = null; this._open(); }, backoffDelay(this._attempt++));
      return;
    }
    this._ws = ws;
    let opened = false;
    const alive = { created: performance.now(), heard: 0, pinged: 0, welcomed: false };
    const watch = setInterval(() => {
      if (this._ws !== ws) {
        clearInterval(watch);
        return;
      }
      const now = performance.now();
      const why = keepaliveVerdict(alive, opened, now);
      if (why === 'ping') {
        alive.pinged = now;
        this._sendNow({ type: Type.PING }, ws);
      } else if (why) {
        clearInterval(watch);
        console.warn('canopy: the server is silent:', why, this.url);
        this._abandon(ws, opened);
      }
    }, KEEPALIVE.tick);
    ws.onopen = () => {
      opened = true;
      alive.heard = performance.now();
      // The hello says how this tab relays: wait for the relay's worker.
      void (this.relay?.started ?? Promise.resolve()).then(() => {
        // A worker that starts after the hello said re-encode must not
        // pass frames through later: the tree counts this tab's hops by
        // what the hello declared.
        if (this.relay && !this.relay.ready) this.relay.forwarding = false;
        this._sendHello(ws);
      });
    };
    ws.onmessage = (ev) => {
      alive.heard = performance.now();
      if (typeof ev.data !== 'string') return;
      let msg;
      try {
        msg = decode(ev.data);
      } catch (err) {
        console.warn('canopy: dropping a bad message:', /** @type {Error} */ (err).message);
        return;
      }
      if (msg.type === Type.WELCOME) alive.welcomed = true;
      this._handle(msg);
    };
    ws.onclose = () => this._lost(ws, opened);
    ws.onerror = () => {}; // onclose follows and does the work
  }

  /**
   * Gives up a connection whose server went silent (keepaliveVerdict): no
   * close handshake to wait for, the dropped connection's path at once.
   * @param {WebSocket} ws @param {boolean} opened
   */
  _abandon(ws, opened) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(4001, 'silent');
    } catch { /* closing already */ }
    if (opened) {
      // The resume starts at the next server: the silent one would hold
      // the first attempt (a socket that never opened moves on by itself).
      this._server = (this._server + 1) % this.urls.length;
      this.url = this.urls[this._server];
    }
    this._lost(ws, opened);
  }

  /**
   * A connection ended: resume on it or the next server, or join again.
   * @param {WebSocket} ws @param {boolean} opened whether it was ever open
   */
  _lost(ws, opened) {
    if (this._ws !== ws) return;
    this._ws = null;
    if (this._resumeStep()) return; // the place is kept for us: every connection stays
    if (!opened) { // that server is down: the next of the list
      this._server = (this._server + 1) % this.urls.length;
      this.url = this.urls[this._server];
    }
    // The server has dropped us and re-attached our children elsewhere.
    this._closeChildren();
    if (this._refused) return; // 'offline' with the server's reason; no retry
    // An offline stream stays 'offline' while we keep asking in the background.
    if (this.state !== 'offline' && this.state !== 'ended') this._setState('reconnecting', 'lost the server');
    const delay = backoffDelay(this._attempt++);
    this._retryTimer = setTimeout(() => { this._retryTimer = null; this._open(); }, delay);
  }

  /**
   * Called when the socket closed: while the server keeps this peer's place
   * (a resume token, within the grace period), dials again, the next server
   * of the list each time, and reports true; false when the place is gone
   * and the client must join afresh.
   */
  _resumeStep() {
    if (this._refused || !this._resumeToken || !this.id || this._graceMs <= 0) return false;
    const now = performance.now();
    if (!this._resumeUntil) {
      this._resumeUntil = now + this._graceMs;
      this._resumeAttempt = 0;
      this.dispatchEvent(new CustomEvent('resuming', { detail: { id: this.id } }));
    }
    if (now >= this._resumeUntil) {
      this._endResume(); // too late: the server has let the place go
      return false;
    }
    const attempt = this._resumeAttempt++;
    if (attempt > 0 && !this._resumeSame) this._server = (this._server + 1) % this.urls.length;
    this._resumeSame = false;
    this.url = this.urls[this._server];
    const delay = attempt === 0 ? 0 : Math.min(backoffDelay(attempt - 1, RESUME_BACKOFF), this._resumeUntil - now);
    this._retryTimer = setTimeout(() => { this._retryTimer = null; this._open(); }, delay);
    return true;
  }

  /** Stops resuming: the next hello joins afresh. */
  _endResume() {
    this._resumeUntil = 0;
    this._resumeToken = null;
    this._held = [];
  }

  /**
   * A resumed welcome: this peer has its old id and place. Make the
   * connections match what the server says now (a no-op when nothing moved
   * meanwhile), then send what was held.
   * @param {Message} msg
   */
  _reconcile(msg) {
    const parent = msg.peer ?? null;
    if (parent && parent !== this.parentId) {
      this._newParent(parent, msg.depth ?? 0); // moved while away: its offer follows
    } else if (!parent && this.parentId) {
      this._closePC(); // queued now
      this.parentId = null;
      this._monitor.setParent(null, performance.now());
    } else {
      this.depth = msg.depth ?? this.depth;
    }
    const want = new Set(msg.children ?? []);
    for (const peer of [...this.children.keys()]) {
      if (!want.has(peer)) this._detachChild(peer);
    }
    for (const peer of want) {
      if (!this.children.has(peer)) this._attachChild(peer); // attached while away: offer now
    }
    const held = this._held;
    this._held = [];
    for (const m of held) this._send(m);
    this.dispatchEvent(new CustomEvent('resumed', { detail: { id: this.id, parent, children: want.size } }));
  }

  /**
   * Sends msg, or holds it while resuming (stats are not held: the next
   * report replaces them).
   * @param {Message} msg @param {WebSocket|null} [ws]
   */
  _send(msg, ws = this._ws) {
    if (this._resumeUntil) {
      if (msg.type !== Type.STATS && this._held.length < MAX_PENDING) this._held.push(msg);
      return;
    }
    this._sendNow(msg, ws);
  }

  /** @param {Message} msg @param {WebSocket|null} [ws] */
  _sendNow(msg, ws = this._ws) {
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
      case Type.WELCOME: {
        const resuming = !!this._resumeUntil;
        this._resumeUntil = 0;
        if (msg.resume) { // not on the welcome that says the source is back
          this._resumeToken = msg.resume;
          this._graceMs = msg.grace ?? 0;
        }
        this._server = Math.max(0, this.urls.indexOf(this.url));
        this.id = msg.id ?? null;
        this.iceServers = msg.iceServers ?? [];
        this.tracks = msg.tracks ?? [];
        this.frameChecks.welcome(msg.sourceKey ?? '', this.tracks);
        if (msg.private) { // the server's -privacy: keep to it on reconnects too
          this.private = true;
          this.capacity = 0;
        }
        this.dispatchEvent(new CustomEvent('welcome', { detail: msg }));
        if (this._unplayable(cannotDecode(this.tracks.filter((t) => t.kind === 'video').map((t) => t.mimeType)))) return;
        if (msg.resumed) {
          // The server kept this place: reconcile with it, even if this tab
          // had stopped counting on it (a hello that carried the token
          // could not have been welcomed otherwise).
          if (!resuming) console.warn('canopy: resumed on', this.url, 'after this tab had given the resume up');
          else console.info('canopy: resumed on', this.url, 'as', this.id);
          this._reconcile(msg);
          return;
        }
        this._held = [];
        if (this.state === 'offline' && this.reason === 'stream not found') this._setState('connecting');
        return;
      }
      case Type.RESUME:
        if (msg.resume) this._resumeToken = msg.resume; // renewed before the old one expires
        return;
      case Type.PARENT:
        this.frameChecks.parent(msg.sourceKey, msg.verify);
        this._newParent(/** @type {string} */ (msg.peer), msg.depth ?? 0);
        return;
      case Type.STANDBY:
        if (msg.peer) this._holdStandby(msg.peer);
        else this._setStandby(msg.standby ?? '');
        return;
      case Type.PROMOTE:
        this._promoteChild(/** @type {string} */ (msg.peer));
        return;
      case Type.QUIET:
        if (msg.resumed) {
          // The parent's signaling is back: the short window ends.
          if (this._quiet.peer === msg.peer) this._quiet = { peer: '', at: 0 };
          return;
        }
        this._quiet = { peer: msg.peer ?? '', at: performance.now() };
        this._checkSilence();
        return;
      case Type.SOURCE_KEY:
        this.frameChecks.setKey(msg.sourceKey ?? '');
        if (msg.verify !== undefined) this.frameChecks.pathChanged([this.pc, this._mediaPC], msg.verify);
        return;
      case Type.SIGNAL: {
        if (!msg.signal) return;
        const child = this.children.get(/** @type {string} */ (msg.peer)) ?? this.standbyChildren.get(/** @type {string} */ (msg.peer));
        if (child) {
          child.onSignal(msg.signal);
          return;
        }
        if (this.standby && msg.peer === this.standby.peer) {
          this.standby.onSignal(msg.signal);
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
        // No switch to the standby here: the server detaches a child's
        // parent only when it has no place for it (queued), where a promote
        // would be refused, and a switch on it moved tabs off live parents.
        if (this._dropStandby(/** @type {string} */ (msg.peer))) return;
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
        // Our old connection still looks alive to the server, which checks
        // it now: the server closes, and the next resume attempt follows,
        // on this server again (the next may be the silent one).
        if (code === Code.RESUME_LIVE) {
          console.info('canopy: the server still sees the old connection; resuming on', this.url, 'again');
          this._resumeSame = true;
          return;
        }
        this.dispatchEvent(new CustomEvent('error', { detail: { code, reason } }));
        if (code === Code.RESUME_REFUSED) {
          // The place is gone (its grace ended, say): the server closes, and
          // the next hello joins afresh with every connection new.
          this._endResume();
          this._closeChildren();
          this._closePC();
          this.parentId = null;
          this._monitor.setParent(null, performance.now());
          return;
        }
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
    if (this._reuseUpstream(peer, depth)) return; // a standby link, already up (standby.js)
    this._promotedFrom = null;
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
    this._wireUpstream(pc, peer);
  }

  /** Takes a connection to the parent peer as the current one's handlers. @param {RTCPeerConnection} pc @param {string} peer */
  _wireUpstream(pc, peer) {
    pc.onicecandidate = (ev) => {
      if (pc !== this.pc || !ev.candidate || !ev.candidate.candidate) return; // skip end-of-candidates
      this._send({ type: Type.SIGNAL, peer, signal: stamped(pc, { kind: SignalKind.CANDIDATE, candidate: ev.candidate.toJSON() }) });
    };
    pc.ontrack = (ev) => this._onTrack(pc, peer, ev.track);
    pc.onconnectionstatechange = pc.oniceconnectionstatechange = () => {
      if (pc === this.pc && parentFailed(pc)) this._promoteStandby(`connection ${pc.connectionState}/${pc.iceConnectionState}`);
      this._updateLive();
    };
    this.frameChecks.connection(pc);
  }

  /** @param {RTCPeerConnection} pc @param {import('./protocol.js').Signal} sig */
  _onSignal(pc, sig) {
    const peer = this.parentId;
    const step = async () => {
      if (pc !== this.pc) return;
      if (reoffered(pc, sig)) {
        // The parent made a new connection: a new one here takes its offer.
        this._newParent(/** @type {string} */ (peer), this.depth);
        if (this.pc) this._onSignal(this.pc, sig);
        return;
      }
      if (!ofLink(pc, sig)) return; // a signal of a link replaced since
      if (sig.kind === SignalKind.OFFER) {
        if (this._unplayable(cannotDecode(offeredVideoCodecs(sig.sdp ?? '')))) return;
        setLink(pc, sig.link ?? 0);
        await pc.setRemoteDescription({ type: 'offer', sdp: sig.sdp });
        for (const c of this._pending.splice(0)) if (ofLink(pc, c) && c.candidate) await this._addCandidate(pc, c.candidate);
        await pc.setLocalDescription(await pc.createAnswer());
        if (pc !== this.pc || !pc.localDescription) return;
        this._send({ type: Type.SIGNAL, peer: /** @type {string} */ (peer), signal: stamped(pc, { kind: SignalKind.ANSWER, sdp: pc.localDescription.sdp }) });
      } else if (sig.kind === SignalKind.CANDIDATE && sig.candidate) {
        if (pc.remoteDescription) await this._addCandidate(pc, sig.candidate);
        else if (this._pending.length < MAX_EDGE_CANDIDATES) this._pending.push(sig); // the server bounds an edge's too
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
    if (receiver) this.relay?.receive(pc, receiver, this.frameChecks.optionsFor(pc), peer);
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
    if (this._promotedFrom?.pc === old) this._promotedFrom = null; // media flows: the server passed the promote on
    this._mediaPC = pc;
    this._mediaParent = peer;
    this.relay?.activate(pc);
    // The same stream, its tracks replaced: the page's <video> keeps its
    // player and its last picture and shows the new track's first frame,
    // where a new srcObject reloads the element first (a parent switch's
    // stall, on top of the switch).
    if (!this.stream) this.stream = new MediaStream();
    for (const t of this.stream.getTracks()) {
      if (this._incoming.get(t.kind) !== t) this.stream.removeTrack(t);
    }
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

  /**
   * Stops for good when this browser cannot decode the stream's video
   * (codec, e.g. 'H264'; '' when it can): the tree forwards the source's
   * codec unchanged, so waiting or reconnecting cannot help, and a viewer
   * that stayed would hold a slot and report its parent stalled.
   * @param {string} codec
   * @returns {boolean} whether it stopped
   */
  _unplayable(codec) {
    if (!codec) return false;
    const reason = `this browser cannot decode ${codec} video`;
    console.warn('canopy:', reason);
    this._refused = true;
    this._closeChildren();
    this._closePC();
    this.parentId = null;
    // Stopped from here: no socket (nothing it still says is heard, its
    // close event finds it detached), no reconnect pending.
    const ws = this._ws;
    this._ws = null;
    if (ws) ws.onmessage = null;
    if (this._retryTimer) clearTimeout(this._retryTimer);
    this._retryTimer = null;
    if (ws && ws.readyState === WebSocket.OPEN) {
      this._send({ type: Type.LEAVE }, ws);
      ws.close(1000, 'leave');
    }
    this._setState('offline', reason);
    this.dispatchEvent(new CustomEvent('error', { detail: { code: Code.UNAVAILABLE, reason } }));
    return true;
  }

  /** Drops the socket so onclose reconnects with backoff and a fresh hello. */
  _rejoin() {
    this._endResume(); // a fresh place, not the one that failed
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

  // Hot standby (standby.js).

  /**
   * The server names this tab's standby parent ('' none): the old link
   * closes, a new one waits for the standby parent's offer.
   * @param {string} id
   */
  _setStandby(id) {
    if (this.standby?.peer === id) return;
    this.standby?.close();
    this.standby = null;
    if (!id || id === this.parentId) return;
    this.standby = this._standbyLink(id);
    this._refusedAt = -Infinity;
  }

  /** @param {string} id @param {{pc: RTCPeerConnection, tracks: Map<string, MediaStreamTrack>}} [from] */
  _standbyLink(id, from) {
    const relay = this.relay;
    const link = new StandbyUpstream({
      peer: id, iceServers: this.iceServers, private: this.private,
      send: (signal) => this._send({ type: Type.SIGNAL, peer: id, signal }),
      receive: relay ? (pc, r) => relay.receive(pc, r) : undefined,
      renew: (sig) => {
        // The standby parent made a new link (planned away and back).
        if (this.standby !== link) return;
        link.close();
        this.standby = this._standbyLink(id);
        this.standby.onSignal(sig);
      },
    }, from);
    return link;
  }

  /**
   * The server asks this tab to hold an idle link for a child-to-be. A
   * pass-through relay's link is track-less and its worker writes nothing
   * to it until promoted; a re-encoding one's (Firefox, Safari) has senders
   * without a track until promoted, so nothing is encoded or sent either.
   * @param {string} child
   */
  _holdStandby(child) {
    if (this.capacity <= 0 || this.children.has(child)) return;
    this.standbyChildren.get(child)?.close();
    if (this.standbyChildren.size >= STANDBY_PER_SLOT * this.capacity) {
      console.warn('canopy: standby link refused: too many held', child, this.standbyChildren.size);
      return;
    }
    const link = this._newChildLink(child, true);
    this.standbyChildren.set(child, link);
    link.start();
  }

  /**
   * Media starts on a child's standby link, which becomes an ordinary
   * child's: no negotiation. Without one, the child is attached afresh.
   * @param {string} child
   */
  _promoteChild(child) {
    const link = this.standbyChildren.get(child);
    this.standbyChildren.delete(child);
    if (!link || link.closed) {
      this._attachChild(child);
      return;
    }
    this.children.get(child)?.close();
    this.children.set(child, link);
    link.promote(this._currentTracks());
    this.dispatchEvent(new CustomEvent('children', { detail: { count: this.children.size } }));
  }

  /** Closes the standby link to or from id; false if there is none. @param {string} id */
  _dropStandby(id) {
    const link = this.standbyChildren.get(id);
    if (link) {
      link.close();
      this.standbyChildren.delete(id);
      return true;
    }
    if (this.standby?.peer !== id) return false;
    this.standby.close();
    this.standby = null;
    return true;
  }

  /**
   * The parent failed: switch to the standby link at once and tell the
   * server, which makes it the tree edge (and passes `promote` on) or
   * refuses. False when there is no link up to switch to.
   * @param {string} reason
   */
  _promoteStandby(reason) {
    const s = this.standby;
    if (!s || !s.connected || !this.pc || !this.parentId || performance.now() - this._refusedAt < REFUSED_RETRY_MS) return false;
    const from = { peer: this.parentId, pc: this.pc, depth: this.depth };
    this._send({ type: Type.PROMOTE, peer: s.peer });
    console.info('canopy: parent', from.peer, 'failed (' + reason + '); switching to the standby link to', s.peer);
    this._adopt(s, this.depth);
    this._promotedFrom = from;
    return true;
  }

  /**
   * A new parent this tab already has a connection to: its standby link
   * (the server's plan after a failure), the link it switched to itself
   * (the server confirms), or, after the server refused that switch, the
   * parent it left (the link it switched to is its standby again).
   * @param {string} peer @param {number} depth
   */
  _reuseUpstream(peer, depth) {
    const back = this._promotedFrom;
    if (back && peer === this.parentId) {
      this._promotedFrom = null;
      this.depth = depth;
      return true;
    }
    if (this.standby?.peer === peer) {
      this._adopt(this.standby, depth);
      return true;
    }
    if (!back || back.peer !== peer || back.pc.connectionState === 'closed') return false;
    this._promotedFrom = null;
    this.standby?.close();
    this.standby = this._standbyLink(/** @type {string} */ (this.parentId), { pc: /** @type {RTCPeerConnection} */ (this.pc), tracks: this._incoming });
    this._refusedAt = performance.now();
    this.pc = back.pc;
    this.parentId = back.peer;
    this.depth = depth;
    this._incoming = new Map(back.pc.getReceivers().map((r) => [r.track.kind, r.track]));
    this._chain = Promise.resolve();
    this._wireUpstream(back.pc, back.peer);
    this.relay?.activate(back.pc);
    this._monitor.setParent(back.peer, performance.now());
    console.info('canopy: standby switch refused; back to the parent', back.peer);
    this.dispatchEvent(new CustomEvent('parentchange', { detail: { parent: back.peer, depth } }));
    return true;
  }

  /**
   * Makes a standby link the connection to the parent. Its tracks are muted
   * until the standby parent sends; the picture switches on their first
   * packet, as for any new parent, but the pass-through worker forwards the
   * new link's frames at once: the old parent has failed, and the first
   * frames (the standby parent's cached GOP) are what this tab's children
   * missed.
   * @param {StandbyUpstream} s @param {number} depth
   */
  _adopt(s, depth) {
    this.standby = null;
    this.standbySwitches++;
    const old = this.pc;
    const pc = s.release();
    if (old && old !== this._mediaPC) this._dropPC(old); // never played: nothing to go back to
    this.pc = pc;
    this.parentId = s.peer;
    this.depth = depth;
    this._incoming = new Map();
    this._pending = [];
    this._chain = s.chain;
    this._wireUpstream(pc, s.peer);
    this.relay?.activate(pc);
    this._monitor.setParent(s.peer, performance.now());
    this.dispatchEvent(new CustomEvent('parentchange', { detail: { parent: s.peer, depth, hot: true } }));
    for (const t of s.tracks.values()) this._onTrack(pc, s.peer, t);
    this._updateLive();
  }

  /**
   * Switches to the standby link when the playing connection has been silent
   * for MEDIA_SILENCE_MS (a pass-through tab; see silenceLimit), or
   * QUIET_SILENCE_MS after the server said its
   * parent's signaling dropped.
   */
  _checkSilence() {
    const pc = this.pc;
    if (!pc || !this.standby || pc !== this._mediaPC || this.state === 'offline' || this.state === 'ended') return;
    /** @type {number[]} */
    const times = [];
    for (const r of pc.getReceivers()) {
      for (const src of r.getSynchronizationSources()) times.push(src.timestamp);
    }
    const now = performance.now();
    const silent = this._silence.silentFor(pc, times, now, Date.now());
    const quiet = this._quiet.peer === this.parentId && now - this._quiet.at < QUIET_FOR_MS;
    if (silent > silenceLimit(quiet, this.relayMode === 'pass-through')) {
      this._promoteStandby(`no media for ${Math.round(silent)} ms`);
    } else if (quiet && !this._quietWake && this.state !== 'closed') {
      this._quietWake = setTimeout(() => {
        this._quietWake = null;
        this._checkSilence();
      }, QUIET_SILENCE_MS - silent + 2);
    }
  }

  // Relaying.

  /** How this tab relays: 'pass-through' (encoded frames, Chromium) or 're-encode'. */
  get relayMode() {
    return this.relay?.ready && this.relay.forwarding ? 'pass-through' : 're-encode';
  }

  /**
   * What a child's link needs to pass frames through, or undefined to
   * re-encode. @param {string[]} kinds
   * @returns {import('./relay.js').PassthroughLink|undefined}
   */
  _passthroughLink(kinds) {
    const relay = this.relay;
    if (!relay?.ready || !relay.forwarding) return undefined;
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
    const child = this._newChildLink(peer, false);
    this.children.set(peer, child);
    this.dispatchEvent(new CustomEvent('children', { detail: { count: this.children.size } }));
    child.start();
  }

  /**
   * A link to a child, or (standby) an idle one to a child-to-be that
   * carries nothing until promoted. @param {string} peer @param {boolean} standby
   */
  _newChildLink(peer, standby) {
    const kinds = this.tracks.length ? [...new Set(this.tracks.map((t) => t.kind))] : ['video', 'audio'];
    const child = new ChildLink({
      peer,
      iceServers: this.iceServers,
      kinds,
      tracks: this._currentTracks(),
      send: (signal) => this._send({ type: Type.SIGNAL, peer, signal }),
      onClosed: (counters) => {
        if (this.standbyChildren.get(peer) === child) this.standbyChildren.delete(peer);
        if (this.children.get(peer) !== child) return;
        this.children.delete(peer);
        this._relayBase.bytes += counters.bytes;
        this._relayBase.packets += counters.packets;
        this.dispatchEvent(new CustomEvent('children', { detail: { count: this.children.size } }));
      },
      preferCodec,
      passthrough: this._passthroughLink(kinds),
      standby,
    });
    return child;
  }

  /** @param {string} peer */
  _detachChild(peer) {
    this.children.get(peer)?.close();
  }

  _closeChildren() {
    for (const child of [...this.children.values()]) child.close();
    for (const link of [...this.standbyChildren.values()]) link.close();
    this.standby?.close(); // its parent knew this tab by an id a reconnect replaces
    this.standby = null;
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
      links: children.flatMap((c) => (c.connected && c.link ? [c.link] : [])),
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
        ...(await this.frameChecks.sample(this._mediaPC, now)),
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
        uplink: uplinkOf(s.links, ms(s.relayBitrateKbps)),
        // What the player shows as "verified" (framesig-client.js), for the dashboard.
        framesVerified: s.framesVerified,
        framesRejected: s.framesRejected,
        verification: s.verification,
      },
    });
  }
}

/** @param {RTCPeerConnection} pc */
function isConnected(pc) {
  return pc.connectionState === 'connected' ||
    pc.iceConnectionState === 'connected' || pc.iceConnectionState === 'completed';
}
