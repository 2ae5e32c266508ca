// The pass-through relay's worker (a module worker, same origin, started by
// relay-passthrough.js). It holds the receive transform of every upstream
// receiver and the encoded-frame writer of every child's sender: each frame
// of the active upstream is copied to each child that is ready for it, with
// the child's continuous timestamp, then handed back to the tab's own
// decoder. Nothing is decoded or encoded here.

import { KEYFRAME_RETRY_MS, KeyframeRequests, Timeline } from './relay-frames.js';

/** @typedef {RTCEncodedVideoFrame|RTCEncodedAudioFrame} Frame */

/**
 * One child's sender for one kind.
 * @typedef {object} Output
 * @property {WritableStreamDefaultWriter<Frame>} writer
 * @property {Timeline} timeline
 * @property {boolean} live whether its link is connected (frames written before are lost)
 * @property {number|null} pt the payload type its link negotiated, when known
 * @property {number} sent
 * @property {number} held frames held back (before a keyframe, or already sent)
 * @property {number} ptMismatch frames dropped because their payload type is not the link's
 * @property {number} errors
 */

/** Upstream receivers' transformers by id, per kind. @type {Map<number, Map<string, RTCRtpScriptTransformer>>} */
const upstreams = new Map();
/** Children's outputs by child id, per kind. @type {Map<string, Map<string, Output>>} */
const children = new Map();
/** The upstream whose frames are forwarded (the one the tab plays). */
let active = 0;
let lastHeldRequest = -Infinity;

const counters = { received: 0, forwarded: 0, keyframesReceived: 0, keyframeErrors: 0 };

const keyframes = new KeyframeRequests(() => {
  const t = upstreams.get(active)?.get('video');
  if (!t) return;
  t.sendKeyFrameRequest().catch(() => { counters.keyframeErrors++; });
});

/**
 * Test hook (and a diagnostic): when on, the hash and arrival time of each
 * frame of the active upstream, per kind, so two tabs can prove they got the
 * same bytes. Bounded; off unless asked for.
 * @type {{max: number, video: Array<[string, number]>, audio: Array<[string, number]>}|null}
 */
let hashes = null;

/** @param {ArrayBuffer} buf @returns {string} FNV-1a of the bytes, and their length */
function fnv(buf) {
  const b = new Uint8Array(buf);
  let h = 0x811c9dc5;
  for (let i = 0; i < b.length; i++) {
    h ^= b[i];
    h = Math.imul(h, 0x01000193);
  }
  return `${(h >>> 0).toString(16)}:${b.length}`;
}

/**
 * @param {Frame} frame
 * @param {number} ts
 * @param {RTCEncodedVideoFrameMetadata|RTCEncodedAudioFrameMetadata} md
 * @returns {Frame} a copy that carries timestamp ts
 */
function copyWith(frame, ts, md) {
  const Ctor = /** @type {any} */ ('type' in frame ? RTCEncodedVideoFrame : RTCEncodedAudioFrame);
  return ts === md.rtpTimestamp ? new Ctor(frame) : new Ctor(frame, { metadata: { ...md, rtpTimestamp: ts } });
}

/**
 * @param {Frame} frame
 * @param {number} up
 * @param {string} kind
 */
function forward(frame, up, kind) {
  const md = frame.getMetadata();
  const ts = md.rtpTimestamp ?? frame.timestamp;
  const key = !('type' in frame) || frame.type === 'key';
  counters.received++;
  if (key && kind === 'video') counters.keyframesReceived++;
  if (hashes) {
    const list = kind === 'video' ? hashes.video : hashes.audio;
    if (list.length < hashes.max) list.push([('type' in frame ? frame.type[0] : 'a') + fnv(frame.data), performance.timeOrigin + performance.now()]);
  }
  const now = performance.now();
  for (const outs of children.values()) {
    const out = outs.get(kind);
    if (!out || !out.live) continue;
    if (out.pt !== null && md.payloadType !== undefined && md.payloadType !== out.pt) {
      out.ptMismatch++;
      continue;
    }
    const sendTs = out.timeline.map(up, ts, key, now);
    if (sendTs === null) {
      out.held++;
      if (out.timeline.waitKey && now - lastHeldRequest >= KEYFRAME_RETRY_MS) {
        lastHeldRequest = now;
        keyframes.request();
      }
      continue;
    }
    try {
      out.writer.write(copyWith(frame, sendTs, md)).catch(() => { out.errors++; });
      out.sent++;
      counters.forwarded++;
    } catch {
      out.errors++;
    }
  }
}

/**
 * Reads one receiver's frames until its connection closes.
 * @param {RTCRtpScriptTransformer} t
 * @param {number} up
 * @param {string} kind
 */
async function pump(t, up, kind) {
  const reader = t.readable.getReader();
  const writer = t.writable.getWriter();
  try {
    for (;;) {
      const { value: frame, done } = await reader.read();
      if (done) break;
      if (up === active) forward(frame, up, kind);
      writer.write(frame).catch(() => {}); // the tab's own decoder still gets it
    }
  } catch {
    // the connection closed under us
  } finally {
    const kinds = upstreams.get(up);
    if (kinds?.get(kind) === t) kinds.delete(kind);
    if (kinds && kinds.size === 0) upstreams.delete(up);
  }
}

self.onrtctransform = (ev) => {
  const t = ev.transformer;
  const { up, kind } = /** @type {{up: number, kind: string}} */ (t.options);
  let kinds = upstreams.get(up);
  if (!kinds) upstreams.set(up, (kinds = new Map()));
  kinds.set(kind, t);
  pump(t, up, kind);
};

/**
 * @param {string} child
 * @param {string} kind
 * @param {ReadableStream<Frame>} readable
 * @param {WritableStream<Frame>} writable
 */
function addOutput(child, kind, readable, writable) {
  let outs = children.get(child);
  if (!outs) children.set(child, (outs = new Map()));
  const video = kind === 'video';
  outs.set(kind, {
    writer: writable.getWriter(), timeline: new Timeline(video ? 90000 : 48000, video),
    live: false, pt: null, sent: 0, held: 0, ptMismatch: 0, errors: 0,
  });
  // A track-less sender's encoder side yields nothing; drain it all the same.
  readable.pipeTo(new WritableStream()).catch(() => {});
}

/** @param {string} child */
function dropChild(child) {
  const outs = children.get(child);
  children.delete(child);
  for (const out of outs?.values() ?? []) out.writer.close().catch(() => {});
}

function stats() {
  /** @type {Record<string, Record<string, {sent: number, held: number, ptMismatch: number, errors: number, waitingForKey: boolean}>>} */
  const kids = {};
  for (const [id, outs] of children) {
    kids[id] = {};
    for (const [kind, o] of outs) {
      kids[id][kind] = { sent: o.sent, held: o.held, ptMismatch: o.ptMismatch, errors: o.errors, waitingForKey: o.timeline.waitKey };
    }
  }
  return {
    ...counters, active, upstreams: upstreams.size, children: kids,
    keyframeRequests: keyframes.sent, keyframeRequestsMerged: keyframes.merged,
    hashes: hashes && { video: hashes.video, audio: hashes.audio },
  };
}

self.onmessage = (ev) => {
  const m = ev.data;
  switch (m.cmd) {
    case 'active':
      active = m.up;
      return;
    case 'output':
      addOutput(m.child, m.kind, m.readable, m.writable);
      return;
    case 'live': {
      const outs = children.get(m.child);
      for (const [kind, out] of outs ?? []) {
        out.live = true;
        if (m.pts && typeof m.pts[kind] === 'number') out.pt = m.pts[kind];
      }
      if (outs?.has('video')) keyframes.request(); // a new child starts at a keyframe
      return;
    }
    case 'keyframe':
      keyframes.request();
      return;
    case 'drop':
      dropChild(m.child);
      return;
    case 'hashes':
      hashes = m.max > 0 ? { max: m.max, video: [], audio: [] } : null;
      return;
    case 'stats':
      self.postMessage({ id: m.id, stats: stats() });
  }
};

self.postMessage({ ready: true });
