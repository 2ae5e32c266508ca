// Codec and payload-type bookkeeping for the pass-through relay. A frame
// forwarded with createEncodedStreams keeps the payload type it arrived
// with (Chromium 156 cannot change it), so the relay's offer to a child must
// use its upstream's payload type numbers: otherwise the child receives the
// bytes and decodes nothing (FIELD-NOTES, "Browser pass-through relay").
// Every function here is pure: no DOM, so node --test runs them.

/**
 * The codec a connection receives, as the relay must offer it to its
 * children: what RTCRtpReceiver.getParameters().codecs says.
 * @typedef {object} UpstreamCodec
 * @property {string} mimeType e.g. 'video/VP8'
 * @property {number} clockRate
 * @property {number} [channels]
 * @property {string} [sdpFmtpLine]
 * @property {number} payloadType
 */

/** MIME subtypes that are not media codecs (repair, redundancy, comfort noise). */
const NOT_MEDIA = new Set(['rtx', 'red', 'ulpfec', 'flexfec-03', 'cn', 'telephone-event']);

/** @param {string} mimeType @returns {string} the lower-case subtype: 'vp8' of 'video/VP8' */
function subtype(mimeType) {
  return (mimeType.split('/')[1] ?? '').toLowerCase();
}

/**
 * The media codec among a receiver's negotiated codecs: the first that is
 * not RTX, RED, FEC or comfort noise. A Go parent offers exactly one, and so
 * does a pass-through browser parent. Null when none is negotiated yet.
 * @param {ReadonlyArray<{mimeType: string, clockRate: number, channels?: number, sdpFmtpLine?: string, payloadType: number}>} codecs
 * @returns {UpstreamCodec|null}
 */
export function upstreamCodec(codecs) {
  const c = codecs.find((x) => !NOT_MEDIA.has(subtype(x.mimeType)));
  if (!c) return null;
  /** @type {UpstreamCodec} */
  const out = { mimeType: c.mimeType, clockRate: c.clockRate, payloadType: c.payloadType };
  if (c.channels) out.channels = c.channels;
  if (c.sdpFmtpLine) out.sdpFmtpLine = c.sdpFmtpLine;
  return out;
}

/** @param {string} [fmtp] @returns {Map<string, string>} its key=value pairs, keys lower-case */
function fmtpParams(fmtp) {
  const m = new Map();
  for (const part of (fmtp ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) m.set(part.slice(0, i).trim().toLowerCase(), part.slice(i + 1).trim().toLowerCase());
  }
  return m;
}

/**
 * Reports whether two descriptions name the same codec for decoding: same
 * MIME type and clock rate and, for H264, the same profile and level and
 * packetization mode (the parameters that change the bitstream).
 * @param {{mimeType: string, clockRate?: number, sdpFmtpLine?: string}} a
 * @param {{mimeType: string, clockRate?: number, sdpFmtpLine?: string}} b
 */
export function sameCodec(a, b) {
  if (a.mimeType.toLowerCase() !== b.mimeType.toLowerCase()) return false;
  if (a.clockRate && b.clockRate && a.clockRate !== b.clockRate) return false;
  if (subtype(a.mimeType) !== 'h264') return true;
  const pa = fmtpParams(a.sdpFmtpLine);
  const pb = fmtpParams(b.sdpFmtpLine);
  return (pa.get('profile-level-id') ?? '42001f') === (pb.get('profile-level-id') ?? '42001f') &&
    (pa.get('packetization-mode') ?? '0') === (pb.get('packetization-mode') ?? '0');
}

/**
 * The codec preferences that make a child's transceiver offer exactly the
 * upstream's codec (and RTX for video, so the child's losses are repaired
 * from the relay's own send history). Null when this browser cannot send it.
 * @template {{mimeType: string, clockRate: number, sdpFmtpLine?: string}} C
 * @param {C[]} capabilities RTCRtpSender.getCapabilities(kind).codecs
 * @param {UpstreamCodec} codec
 * @returns {C[]|null}
 */
export function preferencesFor(capabilities, codec) {
  const match = capabilities.find((c) => sameCodec(c, codec));
  if (!match) return null;
  const rtx = codec.mimeType.toLowerCase().startsWith('video/')
    ? capabilities.filter((c) => subtype(c.mimeType) === 'rtx')
    : [];
  return [match, ...rtx];
}

/**
 * Renumbers payload types in an SDP so that each wanted codec has its
 * upstream's number. Numbers are swapped across the whole description (every
 * m-section, rtpmap, fmtp, rtcp-fb and RTX apt=), so a bundle never maps one
 * number to two codecs. Returns the new SDP and the wanted codecs it could
 * not find or place.
 * @param {string} sdp
 * @param {Array<UpstreamCodec & {kind: string}>} wants
 * @returns {{sdp: string, missing: string[]}}
 */
export function alignPayloadTypes(sdp, wants) {
  const eol = sdp.includes('\r\n') ? '\r\n' : '\n';
  let lines = sdp.split(eol);
  for (const w of wants) {
    const from = findPayloadType(lines, w);
    if (from === null || from === w.payloadType) continue;
    lines = swapPayloadTypes(lines, from, w.payloadType);
  }
  const missing = wants.filter((w) => findPayloadType(lines, w) !== w.payloadType).map((w) => `${w.kind} ${w.mimeType}/${w.payloadType}`);
  return { sdp: lines.join(eol), missing };
}

/**
 * The payload type of codec w in the first m-section of its kind, or null.
 * @param {string[]} lines
 * @param {UpstreamCodec & {kind: string}} w
 * @returns {number|null}
 */
function findPayloadType(lines, w) {
  let inKind = false;
  /** @type {Map<number, {mimeType: string, clockRate: number, sdpFmtpLine?: string}>} */
  const codecs = new Map();
  for (const line of lines) {
    if (line.startsWith('m=')) {
      if (inKind) break;
      inKind = line.startsWith(`m=${w.kind} `);
      continue;
    }
    if (!inKind) continue;
    let m = /^a=rtpmap:(\d+) ([^/]+)\/(\d+)/.exec(line);
    if (m) {
      codecs.set(Number(m[1]), { mimeType: `${w.kind}/${m[2]}`, clockRate: Number(m[3]) });
      continue;
    }
    m = /^a=fmtp:(\d+) (.*)$/.exec(line);
    const c = m && codecs.get(Number(m[1]));
    if (m && c) c.sdpFmtpLine = m[2];
  }
  for (const [pt, c] of codecs) {
    if (sameCodec(c, w)) return pt;
  }
  return null;
}

/**
 * Swaps payload types a and b everywhere in an SDP.
 * @param {string[]} lines
 * @param {number} a
 * @param {number} b
 * @returns {string[]}
 */
function swapPayloadTypes(lines, a, b) {
  const swap = (/** @type {string} */ t) => (t === String(a) ? String(b) : t === String(b) ? String(a) : t);
  return lines.map((line) => {
    if (line.startsWith('m=')) {
      return line.split(' ').map((t, i) => (i >= 3 ? swap(t) : t)).join(' ');
    }
    const m = /^(a=(?:rtpmap|fmtp|rtcp-fb):)(\d+)( .*)?$/.exec(line);
    if (!m) return line;
    let rest = m[3] ?? '';
    if (m[1] === 'a=fmtp:') rest = rest.replace(/(^|[ ;])apt=(\d+)/, (_, pre, pt) => `${pre}apt=${swap(pt)}`);
    return m[1] + swap(m[2]) + rest;
  });
}

/** The RTP header extension that carries a frame's id and its dependencies. */
export const DEPENDENCY_DESCRIPTOR_URI = 'https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension';

/**
 * Removes the dependency descriptor extension from an offer. A forwarded
 * frame's metadata carries the frame id and dependencies that the receiver
 * it came through assigned; after a parent switch they are another
 * receiver's numbering, and a child told so over this extension drops every
 * frame until the next keyframe (seen here: 50 frames, a 1.6 s freeze,
 * after a standby switch). Without it the child derives references from
 * the codec's own payload descriptor, which the sending link numbers
 * itself, continuously. Pure.
 * @param {string} sdp
 * @returns {string}
 */
export function withoutDependencyDescriptor(sdp) {
  return sdp.split('\r\n').filter((l) => !(l.startsWith('a=extmap:') && l.includes(DEPENDENCY_DESCRIPTOR_URI))).join('\r\n');
}

/**
 * The send-side bandwidth estimate a pass-through link starts from and
 * never goes below, kbps. Chromium starts every link's estimate at 300 kbps
 * and paces what it sends to 2.5× the estimate; a standby link carries
 * nothing before it is promoted, so its estimate is still 300 kbps then
 * (measured here), and the cached GOP a promoted child starts from (125 KB
 * for the demo's 2 s GOP at 500 kbps) sat in the pacer for seconds: the
 * child froze 2–3 s after its hot switch, its own children longer. A
 * pass-through sender cannot lower what it sends anyway (no encoder), so an
 * estimate below the stream's bitrate only queues it; the tree's measured
 * uplink (uplink.js) is what sheds children of a relay that cannot keep up.
 */
export const PASSTHROUGH_START_KBPS = 4000;
export const PASSTHROUGH_MIN_KBPS = 1500;

/**
 * Adds x-google-start-bitrate and x-google-min-bitrate, as an fmtp line of
 * their own, to every video codec of an answer a pass-through relay applies
 * that has no fmtp line (VP8; Chromium reads them from the remote
 * description for its sending side), so a child's link starts and stays
 * fast enough for a GOP burst. A codec with parameters (H264) is left
 * alone: extending its fmtp line made the H264 chain test's leaf receive
 * frames its relays never had (not understood yet). So are codecs that are
 * not media (RTX, RED, FEC). Pure.
 * @param {string} sdp
 * @param {number} [startKbps]
 * @param {number} [minKbps]
 * @returns {string}
 */
export function withSendBitrates(sdp, startKbps = PASSTHROUGH_START_KBPS, minKbps = PASSTHROUGH_MIN_KBPS) {
  const params = `x-google-start-bitrate=${startKbps};x-google-min-bitrate=${minKbps}`;
  const lines = sdp.split('\r\n');
  /** @type {string[]} */
  const out = [];
  let video = false;
  /** Media payload types of the current video section with an fmtp line. @type {Set<string>} */
  let withFmtp = new Set();
  /** @type {string[]} */
  let media = [];
  for (const [i, l] of lines.entries()) {
    if (l.startsWith('m=')) {
      video = l.startsWith('m=video');
      withFmtp = new Set();
      media = [];
      for (let j = i + 1; j < lines.length && !lines[j].startsWith('m='); j++) {
        const f = /^a=fmtp:(\d+) /.exec(lines[j]);
        if (f) withFmtp.add(f[1]);
      }
    }
    const r = video ? /^a=rtpmap:(\d+) ([^/]+)\//.exec(l) : null;
    if (r && !NOT_MEDIA.has(r[2].toLowerCase())) {
      media.push(r[1]);
      out.push(l);
      if (!withFmtp.has(r[1])) out.push(`a=fmtp:${r[1]} ${params}`);
      continue;
    }
    out.push(l);
  }
  return out.join('\r\n');
}
