// The pass-through relay's worker (a module worker, same origin, started by
// relay-passthrough.js). It holds the receive transform of every upstream
// receiver and the encoded-frame writer of every child's sender: each frame
// of the active upstream is copied to each child that is ready for it, with
// the child's continuous timestamp, then handed back to the tab's own
// decoder. Nothing is decoded or encoded here.

import { KEYFRAME_RETRY_MS, KeyframeRequests, Timeline, burstOver, burstTimestamps, freshGop } from './relay-frames.js';
import { ReceiveVerification } from './framesig-worker.js';

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
 * @property {boolean} pendingBurst promoted while the cached GOP was not the playing upstream's: starts
 *   from the next frame's GOP (the new parent's burst) instead
 * @property {Array<Array<number|null>>} log what was decided for its video frames, while hashes are recorded (a diagnostic)
 */

/** Upstream receivers' transformers by id, per kind. @type {Map<number, Map<string, RTCRtpScriptTransformer>>} */
const upstreams = new Map();
/** Children's outputs by child id, per kind. @type {Map<string, Map<string, Output>>} */
const children = new Map();
/** The upstream whose frames are forwarded (the one the tab plays). */
let active = 0;
/** When the active upstream's last video frame arrived (performance.now()). */
let lastVideoAt = -Infinity;
let lastHeldRequest = -Infinity;

const counters = { received: 0, forwarded: 0, keyframesReceived: 0, keyframeErrors: 0, burst: 0, deferredBursts: 0 };

/** Source-signed frames: every receiver's frames are checked before the tab decodes them (framesig-worker.js). */
const verification = new ReceiveVerification((m) => self.postMessage(m));

const keyframes = new KeyframeRequests(() => {
  const t = upstreams.get(active)?.get('video');
  if (!t) return;
  t.sendKeyFrameRequest().catch(() => { counters.keyframeErrors++; });
});

/**
 * Test hook (and a diagnostic): when on, the hash and arrival time of each
 * frame of the active upstream, per kind, so two tabs can prove they got the
 * same bytes. Bounded; off unless asked for.
 * Each entry: hash, arrival (wall-clock ms), RTP timestamp, frame id (video, where
 * the metadata has one), upstream id.
 * @typedef {[string, number, number, number|null, number]} FrameSeen
 * @type {{max: number, video: FrameSeen[], audio: FrameSeen[]}|null}
 */
let hashes = null;

/**
 * A frame's id from its metadata (Chromium's video frames carry one; the
 * type library does not know it), or null.
 * @param {RTCEncodedVideoFrameMetadata|RTCEncodedAudioFrameMetadata} md
 * @returns {number|null}
 */
function frameIdOf(md) {
  const id = /** @type {{frameId?: number}} */ (md).frameId;
  return id ?? null;
}

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
 * @param {boolean} [early] a frame the upstream sent before it became the playing one: it goes
 *   to the GOP cache and the children waiting to start from it, not to the others
 */
function forward(frame, up, kind, early = false) {
  const md = frame.getMetadata();
  const ts = md.rtpTimestamp ?? frame.timestamp;
  const key = !('type' in frame) || frame.type === 'key';
  counters.received++;
  if (key && kind === 'video') counters.keyframesReceived++;
  if (kind === 'video') remember(frame, up, key);
  const now = performance.now();
  /** Outputs just started from the GOP, which ends with this frame. @type {Set<Output>} */
  const started = new Set();
  if (kind === 'video') {
    lastVideoAt = now;
    for (const outs of children.values()) {
      const out = outs.get('video');
      if (out?.pendingBurst && gop.up === up && burstEnded()) {
        out.pendingBurst = false;
        burst(out);
        started.add(out);
      }
    }
  }
  if (hashes) {
    const list = kind === 'video' ? hashes.video : hashes.audio;
    if (list.length < hashes.max) list.push([('type' in frame ? frame.type[0] : 'a') + fnv(frame.data), performance.timeOrigin + performance.now(), ts, frameIdOf(md), up]);
  }
  // Children that played from the old parent do without what the new one
  // sent before the switch: its burst, mostly the GOP they decoded already,
  // which sent again through Chromium's pacer (1 ms apart) delayed the live
  // frames behind it and stalled a grandchild 120–230 ms across a switch
  // that cost it nothing before (TestBrowserPassthroughParentSwitch).
  if (early) return;
  for (const outs of children.values()) {
    const out = outs.get(kind);
    if (!out || !out.live || started.has(out)) continue;
    if (out.pendingBurst && kind === 'video') {
      // Waits to start from the GOP once a burst is over (above); with
      // nothing cached, for a keyframe, asked for.
      out.held++;
      if (gop.frames.length === 0 && now - lastHeldRequest >= KEYFRAME_RETRY_MS) {
        lastHeldRequest = now;
        keyframes.request();
      }
      continue;
    }
    if (out.pt !== null && md.payloadType !== undefined && md.payloadType !== out.pt) {
      out.ptMismatch++;
      continue;
    }
    const sendTs = out.timeline.map(up, ts, key, now);
    if (hashes && kind === 'video' && out.log.length < hashes.max) out.log.push([Math.round(performance.timeOrigin + now), up, ts, sendTs, key ? 1 : 0, frameIdOf(md)]);
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
 * Video frames of the active upstream since its last keyframe (copies), so
 * that a promoted standby child starts at once from them rather than
 * waiting up to a GOP for the next keyframe (the demo's is 2 s; a file
 * source makes none on request). Bounded: past GOP_MAX_FRAMES the cache
 * empties until the next keyframe.
 * @type {{up: number, frames: RTCEncodedVideoFrame[]}}
 */
let gop = { up: 0, frames: [] };
/** 10 s at 30 fps: the longest GOP the tests use; ~1–3 MB at this project's bitrates. */
const GOP_MAX_FRAMES = 300;

/**
 * Whether the cached GOP ends with a live frame, not inside a Go parent's
 * burst: a child started mid-burst would get the rest of it as forwarded,
 * 1 ms apart, through Chromium's pacer (see burst).
 */
function burstEnded() {
  return burstOver(gop.frames.slice(-2).map(tsOf));
}

/** @param {Frame} frame @returns {number} its RTP timestamp */
function tsOf(frame) {
  return frame.getMetadata().rtpTimestamp ?? frame.timestamp;
}

/** @param {Frame} frame @param {number} up @param {boolean} key */
function remember(frame, up, key) {
  const Video = /** @type {any} */ (RTCEncodedVideoFrame); // the copy constructor, which the lib does not declare
  if (key) gop = { up, frames: [new Video(frame)] };
  else if (gop.up === up && gop.frames.length > 0 && gop.frames.length < GOP_MAX_FRAMES) {
    // A late frame (a NACK repair) goes where its timestamp puts it, after
    // the keyframe: a burst replays the cache in order.
    const ts = tsOf(frame);
    let at = gop.frames.length;
    while (at > 1 && ((ts - tsOf(gop.frames[at - 1])) | 0) < 0) at--;
    gop.frames.splice(at, 0, new Video(frame));
  } else gop.frames = [];
}

/**
 * Starts a child's video output that was promoted (a standby link): from
 * the cached GOP if it is the playing upstream's and fresh, or else from the
 * GOP of the next frame that arrives. Writing a dead parent's GOP froze
 * chained orphans: the child's new receiver got a stale GOP (up to 2 s of
 * frames, paced over ~1 s by Chromium), then the new parent's keyframe
 * behind it, and Chromium's decoder dropped a GOP (59 frames) and showed
 * nothing until the source's next keyframe.
 * @param {Output} out
 */
function startPromoted(out) {
  // Else the child starts from the GOP once the next frames have come and
  // a burst is over (forward): the new parent's whole burst, or the same
  // parent's GOP, late, which costs a live parent at most its own delay.
  if (freshGop({ gopUp: gop.up, active, frames: gop.frames.length, lastVideoAt, now: performance.now() })) {
    burst(out);
    return;
  }
  out.pendingBurst = true;
  counters.deferredBursts++;
}

/**
 * Writes the cached GOP to a child's video output that just went live, in
 * order, through its timeline (which starts it at the keyframe). False if
 * there is nothing cached.
 * @param {Output} out
 */
function burst(out) {
  if (gop.frames.length === 0) return false;
  const now = performance.now();
  const n = gop.frames.length;
  const times = burstTimestamps(tsOf(gop.frames[n - 1]), gop.frames.map((f) => f.data.byteLength), out.timeline.step);
  for (const [i, frame] of gop.frames.entries()) {
    const md = frame.getMetadata();
    if (out.pt !== null && md.payloadType !== undefined && md.payloadType !== out.pt) continue;
    // Frames before the newest go just before it, replayed faster than
    // made (relay-frames.js burstTimestamps): with their own timestamps the
    // child replayed the GOP at its pace, up to a GOP behind, and dropped
    // what came live after it until the next keyframe (59 frames, a 2.6 s
    // freeze, in a chain of switches); 1 ms apart, they arrived far slower
    // than their timestamps ran, and it froze as long.
    const ts = times[i];
    const sendTs = out.timeline.map(gop.up, ts, frame.type === 'key', now);
    if (hashes && out.log.length < hashes.max) out.log.push([Math.round(performance.timeOrigin + now), -gop.up, ts, sendTs, frame.type === 'key' ? 1 : 0, frameIdOf(md)]);
    if (sendTs === null) continue;
    try {
      out.writer.write(copyWith(frame, sendTs, md)).catch(() => { out.errors++; });
      out.sent++;
      counters.burst++;
    } catch {
      out.errors++;
    }
  }
  return true;
}

/**
 * Frames (copies) of upstreams that are not the playing one, by upstream:
 * media on a standby link means its parent was promoted, and the tab makes
 * it the playing one a moment later. The server tells both at once when a
 * relay leaves, and a Go parent's burst (its GOP, the keyframe first) can
 * arrive before the tab's own `parent` message: forwarded from activation
 * on, a burst's keyframe was lost, and a promoted child of this tab waited
 * for the source's next keyframe (1.6 s) with nothing to start from. They
 * fill the GOP cache at the switch (forward's early).
 * @type {Map<number, Array<{frame: Frame, kind: string}>>}
 */
const early = new Map();
/** Frames kept per upstream (~2 s of video and audio): what arrives between a promote and the tab's switch. */
const EARLY_MAX = 160;

/** @param {Frame} frame @param {number} up @param {string} kind */
function keepEarly(frame, up, kind) {
  let list = early.get(up);
  if (!list) early.set(up, (list = []));
  const Ctor = /** @type {any} */ (kind === 'video' ? RTCEncodedVideoFrame : RTCEncodedAudioFrame);
  list.push({ frame: new Ctor(frame), kind });
  if (list.length > EARLY_MAX) list.shift();
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
  const opts = /** @type {{verify?: import('./framesig-worker.js').VerifyOptions}} */ (t.options).verify;
  // The tab's own decoder gets each frame once its signature verified,
  // stripped of it, in arrival order.
  const check = await verification.track(up, kind, opts, t, (f) => { writer.write(f).catch(() => {}); });
  try {
    for (;;) {
      const { value: frame, done } = await reader.read();
      if (done) break;
      // Children get the source's bytes, signature and all, unchecked (they
      // verify themselves; checking first would add a hop's delay), but
      // nothing more from a parent already caught tampering.
      if (verification.tampered(up)) {
        // nothing more from it
      } else if (up === active) {
        forward(frame, up, kind);
      } else {
        keepEarly(frame, up, kind);
      }
      const full = check.push(frame);
      if (full) await full;
    }
  } catch {
    // the connection closed under us
  } finally {
    verification.remove(up, kind);
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
    live: false, pt: null, sent: 0, held: 0, ptMismatch: 0, errors: 0, pendingBurst: false, log: [],
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
  /** @type {Record<string, Record<string, {sent: number, held: number, ptMismatch: number, errors: number, waitingForKey: boolean, log?: any[]}>>} */
  const kids = {};
  for (const [id, outs] of children) {
    kids[id] = {};
    for (const [kind, o] of outs) {
      kids[id][kind] = { sent: o.sent, held: o.held, ptMismatch: o.ptMismatch, errors: o.errors, waitingForKey: o.timeline.waitKey, log: hashes ? o.log : undefined };
    }
  }
  return {
    ...counters, active, upstreams: upstreams.size, children: kids,
    keyframeRequests: keyframes.sent, keyframeRequestsMerged: keyframes.merged,
    hashes: hashes && { video: hashes.video, audio: hashes.audio },
    verify: verification.stats(),
  };
}

self.onmessage = (ev) => {
  const m = ev.data;
  switch (m.cmd) {
    case 'active': {
      if (m.up === active) return;
      // Another parent: the cached GOP is the old one's. What the new one
      // sent before now is forwarded first, in order.
      gop = { up: m.up, frames: [] };
      lastVideoAt = -Infinity;
      active = m.up;
      const before = early.get(m.up) ?? [];
      early.clear();
      for (const { frame, kind } of before) forward(frame, m.up, kind, true);
      return;
    }
    case 'output':
      addOutput(m.child, m.kind, m.readable, m.writable);
      return;
    case 'live': {
      const outs = children.get(m.child);
      for (const [kind, out] of outs ?? []) {
        out.live = true;
        if (m.pts && typeof m.pts[kind] === 'number') out.pt = m.pts[kind];
      }
      const video = outs?.get('video');
      // A new child starts at a keyframe: a promoted standby one from a
      // cached GOP, others at the next keyframe, asked for.
      if (video && m.burst) startPromoted(video);
      else if (video) keyframes.request();
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
    case 'key':
      if (m.up) verification.setUpstreamKey(m.up, m.key ?? null, m.required !== false);
      else verification.setKey(m.key ?? null);
      return;
    case 'stats':
      self.postMessage({ id: m.id, stats: stats() });
  }
};

self.postMessage({ ready: true });
