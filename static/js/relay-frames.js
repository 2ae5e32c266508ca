// What the pass-through relay decides per frame, apart from the browser APIs
// that carry it (relay-worker.js): which RTP timestamp a frame gets on each
// child's link, which frames a child must not get yet, and how keyframe
// requests are merged before they go upstream. Pure: node --test runs it.

/** Keyframe requests go upstream at most once per this many ms per relay (issue 13). */
export const KEYFRAME_REQUEST_GAP_MS = 300;

/**
 * While a child waits for its first keyframe, the relay asks again this
 * often: the request may be lost, or answered before the child's link was
 * up. The source's GOP (2 s for the demo) bounds the wait anyway.
 */
export const KEYFRAME_RETRY_MS = 1000;

/**
 * A new parent whose timestamps land within this many seconds of what the
 * child was sent carries the same timeline (Go relays forward the source's
 * timestamps unchanged, and a relay's GOP burst repeats up to a GOP, 10 s
 * at most in the tests): keep the offset and skip what was sent already.
 * Further away it is another timeline (the source restarted): re-base.
 */
export const SAME_TIMELINE_S = 30;

/**
 * A frame of the playing parent that comes after a newer one (its packets
 * were lost and a NACK repaired them: the browser hands the transform each
 * frame as it completes) still goes to the children if it is this recent
 * and was not sent: the frames after it reference it. Dropped, a loss on a
 * relay's uplink froze its children until the next keyframe: under a relay
 * that delays 6 frames in 60, the child decoded a fifth of the frames its
 * parent did (TestBrowserRelayForwardsLateRepairedFrames, session 12).
 */
export const LATE_S = 1;
/** How many sent timestamps a Timeline remembers to tell a late frame from a repeat (LATE_S of 50 fps audio). */
const SENT_MEMORY = 64;

/**
 * A burst to a promoted child replays the cached GOP this many times
 * faster than it was made. Chromium paces what a link sends, and a link's
 * estimate collapses when media starts on it (a promoted standby link
 * carried none): a GOP burst left at ~0.8 Mbps here, 2.4× the demo
 * stream's bitrate, under load 25. Spaced 1 ms apart, as a Go relay's
 * unpaced burst is, its frames arrived 14× slower than their timestamps
 * ran; the child's decoder took that as its clock and froze 2–3 s after
 * the burst (59 frames dropped). Replayed at 2×, the timestamps run no
 * faster than the frames can arrive, and the child plays the GOP through
 * instead, a little behind the live edge while its jitter buffer drains.
 */
export const BURST_SPEEDUP = 2;

/**
 * The timestamps a cached GOP is burst with: the newest frame keeps its
 * own, and each earlier one is moved before the next by its share of the
 * burst's span in bytes (Chromium's pacer sends bytes at a rate: a big
 * keyframe takes longer than a small delta), the span being the GOP's
 * frames at the nominal step, replayed BURST_SPEEDUP times faster; at
 * least 1 ms apart. Pure.
 * @param {number} newest the newest frame's timestamp
 * @param {number[]} sizes each frame's size, bytes, oldest first
 * @param {number} step the nominal spacing of frames, ticks
 * @param {number} clockRate ticks per second
 * @returns {number[]} the timestamps, oldest first (mod 2^32)
 */
export function burstTimestamps(newest, sizes, step, clockRate = 90000) {
  const n = sizes.length;
  const out = new Array(n);
  if (n === 0) return out;
  const minGap = Math.round(clockRate / 1000);
  const span = ((n - 1) * step) / BURST_SPEEDUP;
  let bytes = 0;
  for (let i = 0; i < n - 1; i++) bytes += Math.max(1, sizes[i]);
  let ts = newest;
  out[n - 1] = newest >>> 0;
  for (let i = n - 2; i >= 0; i--) {
    ts -= Math.max(minGap, Math.round((span * Math.max(1, sizes[i])) / bytes));
    out[i] = ts >>> 0;
  }
  return out;
}

/**
 * How recent the playing upstream's last video frame must be for its cached
 * GOP to start a promoted child at once: two frames at 30 fps, and less
 * than the silence after which a tab switches parent itself (standby.js
 * QUIET_SILENCE_MS, 120 ms). Older, the GOP may be a dead parent's while
 * this tab is switching too.
 */
export const FRESH_GOP_MS = 70;

/**
 * A frame this long after the one before it (10 ms of the 90 kHz clock) is
 * live: a Go parent's burst spaces its frames 1 ms apart.
 */
export const LIVE_GAP = 900;

/**
 * Whether a promoted child starts from the cached GOP now, or waits for the
 * next frames (freshGop false). Pure.
 * @param {{gopUp: number, active: number, frames: number, lastVideoAt: number, now: number}} s
 *   whose GOP it is, the playing upstream, how many frames it holds, and when the playing upstream's last video frame came
 */
export function freshGop(s) {
  return s.gopUp === s.active && s.frames > 0 && s.now - s.lastVideoAt <= FRESH_GOP_MS;
}

/**
 * Whether a GOP whose last two timestamps are these ends with a live frame,
 * not inside a Go parent's burst (a child started mid-burst would get the
 * rest 1 ms apart, through Chromium's pacer). Pure.
 * @param {number[]} last the timestamps of the GOP's last frames (at most two used)
 */
export function burstOver(last) {
  const n = last.length;
  return n >= 2 && ((last[n - 1] - last[n - 2]) | 0) >= LIVE_GAP;
}

/** @param {number} x @returns {number} x as a signed 32-bit difference */
function i32(x) {
  return x | 0;
}

/**
 * One child's timeline for one media kind. The child's sender keeps its own
 * SSRC and sequence numbers across parent switches, so the child sees one
 * stream; only the timestamps must stay continuous and increasing, which is
 * what this keeps (FIELD-NOTES: without it the child froze in 3 of 9
 * switches; with it, 0 of 8).
 */
export class Timeline {
  /**
   * @param {number} clockRate RTP clock: 90000 for video, 48000 for Opus
   * @param {boolean} needKey whether the child must start at a keyframe (video)
   */
  constructor(clockRate, needKey) {
    this.clockRate = clockRate;
    this.needKey = needKey;
    /** Whether delta frames are held back until a keyframe passes. */
    this.waitKey = needKey;
    /** Added to upstream timestamps, modulo 2^32. */
    this.offset = 0;
    /** Timestamp of the last frame sent. @type {number|null} */
    this.last = null;
    /** When it was sent, ms. */
    this.lastAt = 0;
    /** Usual spacing of frames, in clock ticks (30 fps or 20 ms until measured). */
    this.step = needKey ? Math.round(clockRate / 30) : Math.round(clockRate / 50);
    /** Id of the upstream the last frame came from. @type {number|null} */
    this.upstream = null;
    this._rebase = false;
    /** The first timestamp sent from this upstream (late frames come after it). @type {number|null} */
    this._since = null;
    /** The last SENT_MEMORY timestamps sent, a ring. @type {number[]} */
    this._sent = [];
    this._next = 0;
  }

  /**
   * Decides one frame of the active upstream.
   * @param {number} upstream id of the connection it came from
   * @param {number} ts its RTP timestamp
   * @param {boolean} key whether it is a keyframe (audio frames all are)
   * @param {number} now ms, monotonic
   * @returns {number|null} the timestamp to send it with, or null to hold it back
   */
  map(upstream, ts, key, now) {
    if (upstream !== this.upstream) {
      this.upstream = upstream;
      this._since = null;
      if (this.last !== null) {
        const d = i32(((ts + this.offset) >>> 0) - this.last);
        if (Math.abs(d) > SAME_TIMELINE_S * this.clockRate) {
          this._rebase = true;
          if (this.needKey) this.waitKey = true;
        }
      }
    }
    if (this.waitKey && !key) return null;
    if (this._rebase && this.last !== null) {
      // Continue where the child is, advanced by the time that passed.
      const elapsed = Math.round(((now - this.lastAt) * this.clockRate) / 1000);
      this.offset = (this.last + Math.max(this.step, elapsed) - ts) >>> 0;
    }
    this._rebase = false;
    const out = (ts + this.offset) >>> 0;
    if (this.last !== null) {
      const d = i32(out - this.last);
      if (d <= 0) return this._late(out, d) ? this._remember(out) : null; // else sent already: a new parent's first frames repeat the old one's
      if (d <= this.clockRate / 5) this.step = d;
    }
    this.waitKey = false;
    this.last = out;
    this.lastAt = now;
    if (this._since === null) this._since = out;
    return this._remember(out);
  }

  /**
   * Whether a frame at out, d ticks behind the last sent, is a late one of
   * this upstream's that was not sent (LATE_S).
   * @param {number} out @param {number} d
   */
  _late(out, d) {
    return d < 0 && -d <= LATE_S * this.clockRate && this._since !== null &&
      i32(out - this._since) > 0 && !this._sent.includes(out);
  }

  /** @param {number} out a timestamp being sent @returns {number} out */
  _remember(out) {
    this._sent[this._next] = out;
    this._next = (this._next + 1) % SENT_MEMORY;
    return out;
  }
}

/**
 * Merges keyframe requests: the first goes at once, later ones within
 * KEYFRAME_REQUEST_GAP_MS become one request at the end of the gap. Joins
 * and children's PLIs would otherwise become a keyframe storm up the tree.
 */
export class KeyframeRequests {
  /**
   * @param {() => void} send sends one request upstream
   * @param {{gapMs?: number, now?: () => number, schedule?: (fn: () => void, ms: number) => unknown}} [opts]
   */
  constructor(send, opts = {}) {
    this._send = send;
    this._gap = opts.gapMs ?? KEYFRAME_REQUEST_GAP_MS;
    this._now = opts.now ?? (() => performance.now());
    this._schedule = opts.schedule ?? ((fn, ms) => setTimeout(fn, ms));
    this._last = -Infinity;
    this._due = false;
    /** Requests sent upstream. */
    this.sent = 0;
    /** Requests folded into another. */
    this.merged = 0;
  }

  /** Asks for a keyframe, now or at the end of the current gap. */
  request() {
    if (this._due) {
      this.merged++;
      return;
    }
    const wait = this._last + this._gap - this._now();
    if (wait <= 0) {
      this._fire();
      return;
    }
    this._due = true;
    this._schedule(() => {
      this._due = false;
      this._fire();
    }, wait);
  }

  _fire() {
    this._last = this._now();
    this.sent++;
    this._send();
  }
}
