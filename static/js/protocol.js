// Canopy's signaling messages for browsers: a mirror of mesh/protocol
// (protocol.go). The envelope, limits and validation rules are the same; Go's
// JSON decoding rejects unknown fields and wrong types, so decode() checks
// those explicitly here. Keep the two files in step.

/** Protocol version a hello carries; the server rejects others. */
export const VERSION = 1;

/** Upper bound of one signaling message, in bytes of UTF-8. */
export const MAX_MESSAGE_SIZE = 64 * 1024;

/** Limits on individual fields (bytes for strings, as in Go). */
export const MAX_ID_LENGTH = 64;
export const MAX_SDP_LENGTH = 48 * 1024;
export const MAX_CANDIDATE_LENGTH = 1024;
export const MAX_TOKEN_LENGTH = 4096;
export const MAX_TRACKS = 8;
export const MAX_CAPACITY = 1000;
export const MAX_REASON_LENGTH = 512;
/**
 * ICE candidates one peer may send along one tree edge, and what a peer
 * queues or adds from one neighbour (MaxEdgeCandidates in Go: a real agent
 * needs a few dozen at most).
 */
export const MAX_EDGE_CANDIDATES = 64;
export const MAX_RECLAIM_LENGTH = 64;
/** Upper bound of a resume token (MaxResumeLength in Go). */
export const MAX_RESUME_LENGTH = 256;
/** Standby children a resumed welcome may list (MaxHeld in Go). */
export const MAX_HELD = 2 * MAX_CAPACITY;
/** Upper bound of a depth, as Validate checks it. */
export const MAX_DEPTH = 1 << 16;

/** Message types. */
export const Type = Object.freeze({
  HELLO: 'hello', // peer → server: join a stream
  WELCOME: 'welcome', // server → peer: your id, the stream's tracks
  PARENT: 'parent', // server → child: this peer is your parent now; expect its offer
  ATTACH: 'attach', // server → parent: offer to this new child
  DETACH: 'detach', // server → parent or child: close the connection to this peer
  SIGNAL: 'signal', // both ways: SDP or ICE candidate for a tree neighbour
  LEAVE: 'leave', // peer → server: leaving on purpose
  OFFLINE: 'offline', // server → peer: the stream's source is gone
  ERROR: 'error', // server → peer: a request failed
  LIVE: 'live', // peer → server: media from my current parent (peer) is playing
  STALLED: 'stalled', // peer → server: media from my parent (peer) stopped; find me another
  STATS: 'stats', // peer → server: periodic measurements
  CAPACITY: 'capacity', // peer → server: feed this many children from now on
  // server → parent {peer}: hold a standby link for this child (offer, no media);
  // server → child {standby}: this peer is your standby parent now ({}: none)
  STANDBY: 'standby',
  // child → server {peer}: my parent failed, I play from my standby now;
  // server → parent {peer}: start sending to this child on its standby link
  PROMOTE: 'promote',
  // server → child {peer}: your parent's signaling dropped; if its media stopped too, switch to your standby
  QUIET: 'quiet',
  // server → peer {resume}: your resume token from now on (a renewal)
  RESUME: 'resume',
  // peer → server {peer, evidence}: a frame from my parent failed verification (source-signed frames)
  TAMPERED: 'tampered',
  // server → peer {sourceKey}: the stream's source has a new key ('' : it signs nothing now)
  SOURCE_KEY: 'sourceKey',
  // peer → server: are you there? (a tab cannot send WebSocket pings); server → peer: pong
  PING: 'ping',
  PONG: 'pong',
});

/** Types the server sends to a peer; a browser ignores anything else. @type {ReadonlySet<string>} */
export const SERVER_TYPES = Object.freeze(new Set([
  Type.WELCOME, Type.PARENT, Type.ATTACH, Type.DETACH, Type.SIGNAL, Type.OFFLINE, Type.ERROR,
  Type.STANDBY, Type.PROMOTE, Type.RESUME, Type.SOURCE_KEY, Type.QUIET, Type.PONG,
]));

/** Roles a peer may take in a stream. */
export const Role = Object.freeze({ SOURCE: 'source', RELAY: 'relay', VIEWER: 'viewer' });

/** What runs a peer. */
export const Kind = Object.freeze({ GO: 'go', BROWSER: 'browser' });

/** What a Signal carries. */
export const SignalKind = Object.freeze({ OFFER: 'offer', ANSWER: 'answer', CANDIDATE: 'candidate' });

/** Error codes carried by an error message. */
export const Code = Object.freeze({
  BAD_MESSAGE: 'bad_message', // not JSON, unknown type, a field out of bounds
  TOO_LARGE: 'too_large', // over MAX_MESSAGE_SIZE
  NOT_FOUND: 'not_found', // no such stream
  STREAM_TAKEN: 'stream_taken', // the stream already has a source
  NOT_NEIGHBOUR: 'not_neighbour', // a signal to a peer this one is not connected to
  STATE: 'bad_state', // e.g. a second hello, or a signal before hello
  FULL: 'full', // no free slot in the tree
  INTERNAL: 'internal', // the server failed; try again
  UNAUTHORIZED: 'unauthorized', // a missing, invalid or insufficient token; the server closes
  RATE_LIMITED: 'rate_limited', // a message over its budget was dropped; the connection stays up
  UNAVAILABLE: 'unavailable', // the server cannot serve this as asked (private mode without TURN); the server closes
  RESUME_REFUSED: 'resume_refused', // a hello's resume token was refused; nothing changed; the server closes: join afresh
  RESUME_LIVE: 'resume_live', // the token's peer still has a connection the server is now checking; retry the resume shortly
});

/**
 * One media track of a stream, as the source declares it.
 * @typedef {object} Track
 * @property {string} id
 * @property {'video'|'audio'} kind
 * @property {string} mimeType e.g. "video/VP8", "audio/opus"
 * @property {number} clockRate
 * @property {number} [channels]
 * @property {string} [fmtp]
 */

/**
 * A STUN or TURN server; the shape RTCPeerConnection takes.
 * @typedef {object} ICEServer
 * @property {string[]} urls
 * @property {string} [username]
 * @property {string} [credential]
 */

/**
 * An SDP description or an ICE candidate (an RTCIceCandidateInit, passed through).
 * @typedef {object} Signal
 * @property {'offer'|'answer'|'candidate'} kind
 * @property {string} [sdp]
 * @property {RTCIceCandidateInit} [candidate]
 * @property {number} [link] the connection it belongs to (link.js)
 */

/**
 * A peer's measurements since it joined (counters) or over the last report
 * interval (rates, delays); protocol.Stats. Zero means unknown.
 * @typedef {object} Stats
 * @property {number} [bytesReceived]
 * @property {number} [packetsReceived]
 * @property {number} [packetsLost]
 * @property {number} [bytesRelayed] sent to children
 * @property {number} [packetsRelayed] sent to children
 * @property {number} [framesDecoded]
 * @property {number} [jitterMs]
 * @property {number} [stallMs] total time without frames while it should have played
 * @property {number} [delayMs] source capture to this peer, where known
 * @property {number} [firstFrameMs] join to first decoded frame
 * @property {number} [bitrateKbps] received, last interval
 * @property {number} [relayBitrateKbps] sent to children, last interval
 * @property {number} [children] children it currently feeds
 * @property {Uplink} [uplink] a relay's upload as its children see it
 * @property {number} [framesVerified] frames played after their signature verified, since start
 * @property {number} [framesRejected] frames refused (forged, unsigned, replayed), since start
 * @property {''|'verified'|'unverified'|'tampered'} [verification] what the frames it plays now are
 */

/**
 * A relay's upload to its children over the last report interval, from
 * their receiver reports; protocol.Uplink. Zero means unknown.
 * @typedef {object} Uplink
 * @property {number} [links] child links the figures cover
 * @property {number} [lossy] links that lost more than UPLINK_LOSSY
 * @property {number} [queued] links whose round trip exceeded its lowest by more than UPLINK_QUEUE_MS
 * @property {number} [loss] the links' mean fraction lost, 0-1
 * @property {number} [rttMs] the links' mean round trip
 * @property {number} [sentKbps] sent to all children
 * @property {number} [estimateKbps] the best child link's availableOutgoingBitrate
 */

/** A child link that lost more than this fraction is lossy (protocol.UplinkLossy). */
export const UPLINK_LOSSY = 0.02;
/** A round trip this far above the link's lowest means a queue (protocol.UplinkQueueMs). */
export const UPLINK_QUEUE_MS = 40;

/**
 * The one envelope every signaling message uses; type says which fields matter.
 * @typedef {object} Message
 * @property {string} type
 * @property {number} [v] hello: protocol version
 * @property {string} [role] hello
 * @property {string} [kind] hello
 * @property {string} [stream] hello, welcome
 * @property {number} [capacity] hello
 * @property {string} [token] hello
 * @property {Track[]} [tracks] hello from a source; welcome
 * @property {boolean} [private] hello from a viewer: watch in private mode (relay-only ICE, no children); welcome: this viewer is in private mode
 * @property {boolean} [passthrough] hello from a browser that relays encoded frames unchanged
 * @property {boolean} [noVerify] hello from a browser that cannot check or strip frame signatures (no receive transform)
 * @property {boolean} [strip] attach, promote, standby to a parent: take signature trailers off what goes to this child
 * @property {string} [id] welcome: this peer's id
 * @property {ICEServer[]} [iceServers] welcome
 * @property {string} [reclaim] welcome to a source: the secret that reclaims its stream name after a drop; hello from a source: that secret
 * @property {string} [resume] welcome, resume: this peer's resume token; hello: resume the place that token names
 * @property {number} [grace] welcome: milliseconds the server keeps a dropped peer's place for its resume
 * @property {boolean} [resumed] welcome: the resume was accepted; peer, depth, standby, children and held describe the place now; quiet: the parent's signaling is back
 * @property {string[]} [children] resumed welcome: the children this peer feeds
 * @property {string[]} [held] resumed welcome: the children it holds standby links for
 * @property {string} [peer] parent, attach, detach, signal: the other peer; resumed welcome: the parent
 * @property {number} [depth] parent, attach, detach
 * @property {Signal} [signal] signal
 * @property {string} [standby] parent: the peer this one would get if its new parent failed; standby, to a child: its standby parent
 * @property {Stats} [stats] stats
 * @property {string} [signKey] hello from a source: its public key (base64url)
 * @property {string} [sourceKey] welcome, parent, sourceKey: the stream's public key (base64url); none: frames are not signed
 * @property {boolean} [verify] parent, sourceKey: false when a hop above re-encodes, so frames arrive unsigned
 * @property {Evidence} [evidence] tampered
 * @property {string} [code] error
 * @property {string} [reason] error, leave, offline, detach
 */

/**
 * What a tampered report shows of the frame it rejected, as received
 * (protocol.Evidence): track 'v' or 'a', its counter, the SHA-256 of its
 * canonical media, its signature ('' when none), and for a replay the
 * counter of the last frame accepted.
 * @typedef {object} Evidence
 * @property {'v'|'a'} track
 * @property {number} counter
 * @property {string} hash base64url
 * @property {string} [sig] base64url
 * @property {number} [last]
 */

/** Base64url lengths of an Ed25519 key, a SHA-256 hash and a signature (sign.go). */
export const KEY_LENGTH = 43;
export const HASH_LENGTH = 43;
export const SIG_LENGTH = 86;
/** Counters stay exact as JavaScript numbers. */
export const MAX_COUNTER = Number.MAX_SAFE_INTEGER;

/** Thrown by encode and decode; `code` is the protocol error code that fits. */
export class ProtocolError extends Error {
  /**
   * @param {string} code one of Code
   * @param {string} message
   */
  constructor(code, message) {
    super(`protocol: ${message}`);
    this.name = 'ProtocolError';
    this.code = code;
  }
}

const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Reports whether s may name a stream or a peer: 1–64 of [A-Za-z0-9_-].
 * @param {unknown} s
 * @returns {boolean}
 */
export function validID(s) {
  return typeof s === 'string' && ID_PATTERN.test(s);
}

const utf8 = new TextEncoder();
/** @param {string} s @returns {number} length in UTF-8 bytes, as Go's len() */
function byteLength(s) {
  return utf8.encode(s).length;
}

/** @param {string} msg */
function invalid(msg) {
  return new ProtocolError(Code.BAD_MESSAGE, `invalid field: ${msg}`);
}

/** @param {string} s @param {number} n */
function truncate(s, n) {
  return s.length <= n ? s : s.slice(0, n) + '…';
}

// Field shapes of each JSON object, as the Go structs declare them. Go's
// decoder is run with DisallowUnknownFields, so unknown keys are errors.
/** @typedef {'string'|'int'|'uint'|'uint32'|'uint16'|'number'|'bool'|'array'|'object'|'any'} FieldType */
/** @type {Record<string, FieldType>} */
const MESSAGE_FIELDS = {
  type: 'string', v: 'int', role: 'string', kind: 'string', stream: 'string',
  capacity: 'int', token: 'string', tracks: 'array', id: 'string', iceServers: 'array',
  peer: 'string', depth: 'int', signal: 'object', standby: 'string', stats: 'object',
  code: 'string', reason: 'string', reclaim: 'string',
  passthrough: 'bool', private: 'bool', noVerify: 'bool', strip: 'bool',
  resume: 'string', grace: 'int', resumed: 'bool', children: 'array', held: 'array',
  signKey: 'string', sourceKey: 'string', verify: 'bool', evidence: 'object',
};
/** @type {Record<string, FieldType>} */
const EVIDENCE_FIELDS = { track: 'string', counter: 'uint', hash: 'string', sig: 'string', last: 'uint' };
/** @type {Record<string, FieldType>} */
const TRACK_FIELDS = {
  id: 'string', kind: 'string', mimeType: 'string', clockRate: 'uint32', channels: 'uint16', fmtp: 'string',
};
/** @type {Record<string, FieldType>} */
const ICE_SERVER_FIELDS = { urls: 'array', username: 'string', credential: 'string' };
/** @type {Record<string, FieldType>} */
const SIGNAL_FIELDS = { kind: 'string', sdp: 'string', candidate: 'any', link: 'uint32' };
/** @type {Record<string, FieldType>} */
const STATS_FIELDS = {
  bytesReceived: 'uint', packetsReceived: 'uint', packetsLost: 'uint', bytesRelayed: 'uint',
  packetsRelayed: 'uint', framesDecoded: 'uint', jitterMs: 'number', stallMs: 'number',
  delayMs: 'number', firstFrameMs: 'number', bitrateKbps: 'number', relayBitrateKbps: 'number',
  children: 'int', uplink: 'object', framesVerified: 'uint', framesRejected: 'uint', verification: 'string',
};
/** Stats.verification's values (protocol.go Verification*); '' is unknown. */
const VERIFICATIONS = ['', 'verified', 'unverified', 'tampered'];
/** @type {Record<string, FieldType>} */
const UPLINK_FIELDS = {
  links: 'int', lossy: 'int', queued: 'int', loss: 'number', rttMs: 'number', sentKbps: 'number', estimateKbps: 'number',
};
/** Stats fields that are measures (float64 in Go) and must lie in [0, 1e12]. */
const STATS_MEASURES = ['jitterMs', 'stallMs', 'firstFrameMs', 'bitrateKbps', 'relayBitrateKbps'];

/** @param {unknown} v @returns {v is Record<string, unknown>} */
function isObject(v) {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Checks that obj has only the given keys with values of the given types and
 * drops null values (Go leaves the zero value for a JSON null).
 * @param {Record<string, unknown>} obj
 * @param {Record<string, FieldType>} fields
 * @param {string} where
 */
function checkShape(obj, fields, where) {
  for (const key of Object.keys(obj)) {
    const want = fields[key];
    if (!want) {
      throw new ProtocolError(Code.BAD_MESSAGE, `malformed message: unknown field ${JSON.stringify(truncate(key, 32))} in ${where}`);
    }
    const v = obj[key];
    if (v === null) {
      if (want !== 'any') delete obj[key];
      continue;
    }
    let ok;
    switch (want) {
      case 'string': ok = typeof v === 'string'; break;
      case 'int': ok = Number.isSafeInteger(v); break;
      case 'uint': ok = Number.isSafeInteger(v) && /** @type {number} */ (v) >= 0; break;
      case 'number': ok = typeof v === 'number' && Number.isFinite(v); break;
      case 'uint32': ok = Number.isInteger(v) && /** @type {number} */ (v) >= 0 && /** @type {number} */ (v) <= 0xffffffff; break;
      case 'uint16': ok = Number.isInteger(v) && /** @type {number} */ (v) >= 0 && /** @type {number} */ (v) <= 0xffff; break;
      case 'bool': ok = typeof v === 'boolean'; break;
      case 'array': ok = Array.isArray(v); break;
      case 'object': ok = isObject(v); break;
      default: ok = true;
    }
    if (!ok) {
      throw new ProtocolError(Code.BAD_MESSAGE, `malformed message: ${where}.${key} must be ${want}`);
    }
  }
}

/**
 * Checks the shape of a whole message, nested objects included.
 * @param {unknown} m
 * @returns {asserts m is Message}
 */
function checkMessageShape(m) {
  if (!isObject(m)) throw new ProtocolError(Code.BAD_MESSAGE, 'malformed message: not a JSON object');
  checkShape(m, MESSAGE_FIELDS, 'message');
  for (const t of /** @type {unknown[]} */ (m.tracks ?? [])) {
    if (!isObject(t)) throw new ProtocolError(Code.BAD_MESSAGE, 'malformed message: a track is not an object');
    checkShape(t, TRACK_FIELDS, 'track');
  }
  for (const s of /** @type {unknown[]} */ (m.iceServers ?? [])) {
    if (!isObject(s)) throw new ProtocolError(Code.BAD_MESSAGE, 'malformed message: an ICE server is not an object');
    checkShape(s, ICE_SERVER_FIELDS, 'iceServer');
    for (const u of /** @type {unknown[]} */ (s.urls ?? [])) {
      if (typeof u !== 'string') throw new ProtocolError(Code.BAD_MESSAGE, 'malformed message: ICE server urls must be strings');
    }
  }
  if (m.signal) checkShape(/** @type {Record<string, unknown>} */ (m.signal), SIGNAL_FIELDS, 'signal');
  if (m.stats) checkShape(/** @type {Record<string, unknown>} */ (m.stats), STATS_FIELDS, 'stats');
  if (m.evidence) checkShape(/** @type {Record<string, unknown>} */ (m.evidence), EVIDENCE_FIELDS, 'evidence');
  const up = /** @type {Record<string, unknown>|undefined} */ (/** @type {Record<string, unknown>|undefined} */ (m.stats)?.uplink);
  if (up !== undefined) {
    if (!isObject(up)) throw new ProtocolError(Code.BAD_MESSAGE, 'malformed message: uplink is not an object');
    checkShape(up, UPLINK_FIELDS, 'uplink');
  }
}

/**
 * Checks the fields the message's type needs; the rules of Message.Validate.
 * @param {Message} m
 * @throws {ProtocolError}
 */
export function validate(m) {
  if (m.reason && byteLength(m.reason) > MAX_REASON_LENGTH) throw invalid(`reason longer than ${MAX_REASON_LENGTH}`);
  validateSigning(m);
  switch (m.type) {
    case Type.HELLO:
      return validateHello(m);
    case Type.WELCOME:
      if (!validID(m.id) || !validID(m.stream)) throw invalid('welcome needs id and stream');
      if (m.reclaim && byteLength(m.reclaim) > MAX_RECLAIM_LENGTH) throw invalid(`reclaim longer than ${MAX_RECLAIM_LENGTH}`);
      validatePlace(m);
      return validateTracks(m.tracks ?? [], false);
    case Type.PARENT: case Type.ATTACH: case Type.DETACH: {
      if (!validID(m.peer)) throw invalid(`${m.type} needs a peer id`);
      if (m.standby && !validID(m.standby)) throw invalid('bad standby id');
      const depth = m.depth ?? 0;
      if (depth < 0 || depth > MAX_DEPTH) throw invalid('depth out of range');
      return;
    }
    case Type.SIGNAL:
      if (!validID(m.peer)) throw invalid('signal needs a peer id');
      return validateSignal(m.signal);
    case Type.LEAVE: case Type.OFFLINE: case Type.PING: case Type.PONG:
      return;
    case Type.LIVE: case Type.STALLED:
      if (m.peer && !validID(m.peer)) throw invalid(`${m.type}: bad peer id`);
      return;
    case Type.STANDBY:
      if (m.peer && m.standby) throw invalid('standby names a child (peer) or a parent (standby), not both');
      if ((m.peer && !validID(m.peer)) || (m.standby && !validID(m.standby))) throw invalid('standby: bad peer id');
      return;
    case Type.PROMOTE:
      if (!validID(m.peer)) throw invalid('promote needs a peer id');
      return;
    case Type.QUIET:
      if (!validID(m.peer)) throw invalid('quiet needs a peer id');
      return;
    case Type.RESUME:
      if (!m.resume) throw invalid('resume needs a token');
      return validateResume(m.resume);
    case Type.TAMPERED:
      return validateTampered(m);
    case Type.SOURCE_KEY:
      return;
    case Type.STATS:
      return validateStats(m.stats);
    case Type.CAPACITY: {
      const capacity = m.capacity ?? 0;
      if (capacity < 0 || capacity > MAX_CAPACITY) throw invalid(`capacity must be 0-${MAX_CAPACITY}`);
      return;
    }
    case Type.ERROR:
      if (!m.code) throw invalid('error needs a code');
      return;
    case '': case undefined:
      throw new ProtocolError(Code.BAD_MESSAGE, 'malformed message: missing type');
    default:
      throw new ProtocolError(Code.BAD_MESSAGE, `unknown message type ${JSON.stringify(truncate(String(m.type), 32))}`);
  }
}

const B64URL = /^[A-Za-z0-9_-]*$/;
/** @param {unknown} s @param {number} len @returns {boolean} base64url without padding of that length */
function b64(s, len) {
  return typeof s === 'string' && s.length === len && B64URL.test(s);
}

/** The signing fields, wherever they appear (sign.go validateSigning). @param {Message} m */
function validateSigning(m) {
  if (m.signKey) {
    if (m.type !== Type.HELLO || m.role !== Role.SOURCE) throw invalid("only a source's hello carries signKey");
    if (!b64(m.signKey, KEY_LENGTH)) throw invalid('signKey must be a base64url Ed25519 public key');
  }
  if (m.sourceKey) {
    if (m.type !== Type.WELCOME && m.type !== Type.PARENT && m.type !== Type.SOURCE_KEY) throw invalid(`${m.type} carries no sourceKey`);
    if (!b64(m.sourceKey, KEY_LENGTH)) throw invalid('sourceKey must be a base64url Ed25519 public key');
  }
  // sourceKey carries verify when a move above a peer changed whether its path can be verified.
  if (m.verify !== undefined && m.type !== Type.PARENT && m.type !== Type.SOURCE_KEY) throw invalid('only parent and sourceKey carry verify');
  if (m.evidence && m.type !== Type.TAMPERED) throw invalid('only tampered carries evidence');
  if (m.noVerify && m.type !== Type.HELLO) throw invalid('only a hello carries noVerify');
  if (m.strip && m.type !== Type.ATTACH && m.type !== Type.PROMOTE && (m.type !== Type.STANDBY || !m.peer)) {
    throw invalid('only attach, promote and a parent\'s standby carry strip');
  }
}

/** @param {Message} m */
function validateTampered(m) {
  if (!validID(m.peer)) throw invalid("tampered needs the parent's peer id");
  const e = m.evidence;
  if (!e) throw invalid('tampered needs evidence');
  if (e.track !== 'v' && e.track !== 'a') throw invalid('evidence track must be v or a');
  if ((e.counter ?? 0) > MAX_COUNTER || (e.last ?? 0) > MAX_COUNTER) throw invalid('evidence counter above 2^53');
  if (!b64(e.hash, HASH_LENGTH)) throw invalid('evidence hash must be a base64url SHA-256');
  if (e.sig && !b64(e.sig, SIG_LENGTH)) throw invalid('evidence sig must be a base64url Ed25519 signature');
}

/** @param {Message} m */
function validateHello(m) {
  if (m.v !== VERSION) throw invalid(`unsupported protocol version ${m.v ?? 0} (want ${VERSION})`);
  if (!validID(m.stream)) throw invalid('stream must be 1-64 of [A-Za-z0-9_-]');
  if (!Object.values(Role).includes(/** @type {any} */ (m.role))) throw invalid(`unknown role ${JSON.stringify(truncate(m.role ?? '', 32))}`);
  if (!Object.values(Kind).includes(/** @type {any} */ (m.kind))) throw invalid(`unknown kind ${JSON.stringify(truncate(m.kind ?? '', 32))}`);
  const capacity = m.capacity ?? 0;
  if (capacity < 0 || capacity > MAX_CAPACITY) throw invalid(`capacity must be 0-${MAX_CAPACITY}`);
  if (m.token && byteLength(m.token) > MAX_TOKEN_LENGTH) throw invalid(`token longer than ${MAX_TOKEN_LENGTH}`);
  if (m.reclaim && byteLength(m.reclaim) > MAX_RECLAIM_LENGTH) throw invalid(`reclaim longer than ${MAX_RECLAIM_LENGTH}`);
  validateResume(m.resume);
  if (m.private && m.role !== Role.VIEWER) throw invalid('only a viewer watches in private mode');
  if (m.passthrough && (m.kind !== Kind.BROWSER || m.role === Role.SOURCE)) throw invalid('only a relaying browser declares passthrough');
  if (m.noVerify && (m.kind !== Kind.BROWSER || m.role === Role.SOURCE || m.passthrough)) {
    throw invalid('only a browser that relays by re-encoding, or not at all, declares noVerify');
  }
  if (m.role === Role.SOURCE) return validateTracks(m.tracks ?? [], true);
  if ((m.tracks ?? []).length !== 0) throw invalid('only a source declares tracks');
}

const RESUME_PATTERN = /^[A-Za-z0-9_.-]*$/;

/** A resume token's bounds ('' or undefined: none). @param {string|undefined} tok */
function validateResume(tok) {
  if (tok === undefined) return;
  if (byteLength(tok) > MAX_RESUME_LENGTH || !RESUME_PATTERN.test(tok)) {
    throw invalid(`resume token must be at most ${MAX_RESUME_LENGTH} of [A-Za-z0-9_.-]`);
  }
}

/** A welcome's resume fields, as validatePlace in Go. @param {Message} m */
function validatePlace(m) {
  validateResume(m.resume);
  const grace = m.grace ?? 0;
  if (grace < 0 || grace > 24 * 3600 * 1000) throw invalid('grace out of range');
  const children = m.children ?? [];
  const held = m.held ?? [];
  if (!m.resumed) {
    if (m.peer || m.standby || (m.depth ?? 0) !== 0 || children.length || held.length) {
      throw invalid('only a resumed welcome describes a place');
    }
    return;
  }
  if ((m.peer && !validID(m.peer)) || (m.standby && !validID(m.standby))) throw invalid('resumed welcome: bad parent or standby id');
  const depth = m.depth ?? 0;
  if (depth < 0 || depth > MAX_DEPTH) throw invalid('depth out of range');
  if (children.length > MAX_CAPACITY || held.length > MAX_HELD) {
    throw invalid(`resumed welcome: at most ${MAX_CAPACITY} children and ${MAX_HELD} standby children`);
  }
  for (const id of [...children, ...held]) {
    if (!validID(id)) throw invalid('resumed welcome: bad child id');
  }
}

/** @param {Track[]} tracks @param {boolean} needOne */
function validateTracks(tracks, needOne) {
  if (needOne && tracks.length === 0) throw invalid('a source declares at least one track');
  if (tracks.length > MAX_TRACKS) throw invalid(`at most ${MAX_TRACKS} tracks`);
  const seen = new Set();
  for (const t of tracks) {
    if (!validID(t.id) || seen.has(t.id)) throw invalid('track ids must be valid and unique');
    seen.add(t.id);
    if (t.kind !== 'video' && t.kind !== 'audio') throw invalid('track kind must be video or audio');
    const mime = byteLength(t.mimeType ?? '');
    if (mime === 0 || mime > 64 || byteLength(t.fmtp ?? '') > 256) throw invalid('track codec out of bounds');
    if (!t.clockRate) throw invalid('track needs a clock rate');
  }
}

/** @param {Signal|undefined} s */
function validateSignal(s) {
  if (!s) throw invalid('signal needs a signal body');
  const hasCandidate = s.candidate !== undefined;
  switch (s.kind) {
    case SignalKind.OFFER: case SignalKind.ANSWER: {
      const n = byteLength(s.sdp ?? '');
      if (n === 0 || n > MAX_SDP_LENGTH) throw invalid(`sdp must be 1-${MAX_SDP_LENGTH} bytes`);
      if (hasCandidate) throw invalid('an sdp signal carries no candidate');
      return;
    }
    case SignalKind.CANDIDATE: {
      // Go keeps the candidate as raw JSON; a browser needs an RTCIceCandidateInit.
      if (!isObject(s.candidate)) throw invalid('candidate must be an object');
      const n = byteLength(JSON.stringify(s.candidate));
      if (n > MAX_CANDIDATE_LENGTH) throw invalid(`candidate must be 1-${MAX_CANDIDATE_LENGTH} bytes`);
      if (s.sdp) throw invalid('a candidate signal carries no sdp');
      return;
    }
    default:
      throw invalid(`unknown signal kind ${JSON.stringify(truncate(String(s.kind ?? ''), 32))}`);
  }
}

/** @param {Stats|undefined} s */
function validateStats(s) {
  if (!s) throw invalid('stats needs a stats body');
  const r = /** @type {Record<string, number|undefined>} */ (s);
  for (const k of STATS_MEASURES) {
    const v = r[k] ?? 0;
    if (!(v >= 0 && v <= 1e12)) throw invalid('stats: a measure is out of range');
  }
  // A delay may be negative (a parent's capture stamp from a skewed clock):
  // the server drops that figure, not the report. protocol.go says why.
  const delay = s.delayMs ?? 0;
  if (!(delay >= -1e12 && delay <= 1e12)) throw invalid('stats: delay out of range');
  const children = s.children ?? 0;
  if (children < 0 || children > MAX_CAPACITY) throw invalid('stats: children out of range');
  // Frame counts: 'uint' already holds them to 2^53 − 1, protocol.go's MaxFrameCount.
  if (!VERIFICATIONS.includes(s.verification ?? '')) {
    throw invalid(`stats: unknown verification ${JSON.stringify(truncate(String(s.verification), 32))}`);
  }
  if (s.uplink) validateUplink(s.uplink);
}

/** The rules of Uplink.validate in uplink.go. @param {Uplink} u */
function validateUplink(u) {
  const links = u.links ?? 0;
  const lossy = u.lossy ?? 0;
  const queued = u.queued ?? 0;
  if (!(links >= 0 && links <= MAX_CAPACITY && lossy >= 0 && lossy <= links && queued >= 0 && queued <= links)) {
    throw invalid('stats: uplink link counts out of range');
  }
  const loss = u.loss ?? 0;
  if (!(loss >= 0 && loss <= 1)) throw invalid('stats: uplink loss out of range');
  for (const v of [u.rttMs ?? 0, u.sentKbps ?? 0, u.estimateKbps ?? 0]) {
    if (!(v >= 0 && v <= 1e12)) throw invalid('stats: an uplink measure is out of range');
  }
}

/**
 * Drops the fields Go's `omitempty` would leave out, so that what a browser
 * sends reads like what Go sends.
 * @param {Record<string, any>} obj
 * @returns {Record<string, any>}
 */
function omitEmpty(obj) {
  /** @type {Record<string, any>} */
  const out = {};
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined || v === null || v === '' || v === 0 || v === false || (Array.isArray(v) && v.length === 0)) continue;
    out[k] = v;
  }
  return out;
}

/**
 * Validates and serialises a message.
 * @param {Message} msg
 * @returns {string} JSON text
 * @throws {ProtocolError}
 */
export function encode(msg) {
  const m = /** @type {Record<string, any>} */ (omitEmpty(msg));
  if (m.signal) m.signal = omitEmpty(m.signal);
  if (m.evidence) m.evidence = omitEmpty(m.evidence);
  // Go sends "stats":{} for all-zero stats (a non-nil pointer is never omitted).
  if (msg.stats && typeof msg.stats === 'object') m.stats = omitEmpty(msg.stats);
  if (m.stats?.uplink && typeof m.stats.uplink === 'object') m.stats.uplink = omitEmpty(m.stats.uplink);
  if (m.type === undefined) m.type = '';
  checkMessageShape(m);
  validate(/** @type {Message} */ (m));
  const text = JSON.stringify(m);
  if (byteLength(text) > MAX_MESSAGE_SIZE) throw new ProtocolError(Code.TOO_LARGE, 'message too large');
  return text;
}

/**
 * Parses and validates one message: size, JSON, known fields of the right
 * types, then the rules of its type. Pass `data` of a WebSocket text frame.
 * @param {string} text
 * @returns {Message}
 * @throws {ProtocolError}
 */
export function decode(text) {
  if (typeof text !== 'string') throw new ProtocolError(Code.BAD_MESSAGE, 'malformed message: not text');
  // A UTF-16 length over the limit is certainly over it in UTF-8 too.
  if (text.length > MAX_MESSAGE_SIZE || byteLength(text) > MAX_MESSAGE_SIZE) {
    throw new ProtocolError(Code.TOO_LARGE, 'message too large');
  }
  let m;
  try {
    m = JSON.parse(text);
  } catch (err) {
    throw new ProtocolError(Code.BAD_MESSAGE, `malformed message: ${/** @type {Error} */ (err).message}`);
  }
  checkMessageShape(m);
  validate(m);
  return m;
}
