// PlaybackMonitor: decides, from periodic samples of decoded frames, when
// media from the current parent counts as playing ('live' is reported once
// per parent) and when it has stalled ('stalled' is reported, and repeated
// every STALL_REPEAT_MS while the silence lasts, as Go peers do: the server
// acts on a parent once enough evidence agrees). A parent that never even
// connects is stalled too, after CONNECT_TIMEOUT_MS: otherwise a peer that
// answers pings but never sends media would hold this viewer forever.
// Pure: the caller passes the clock, so the rules are testable without timers.

/** Frames stop for longer than this while the parent should send: stalled. */
export const STALL_AFTER_MS = 2000;
/**
 * A connected parent that has not produced a first frame in this long is
 * stalled too. Longer than STALL_AFTER_MS because a new connection may wait
 * for a keyframe (up to a GOP from a source that ignores keyframe requests).
 */
export const FIRST_FRAME_TIMEOUT_MS = 10000;
/**
 * A parent whose connection has not come up this long after it was assigned
 * is stalled. ICE on a working path connects in well under a second, and
 * over TURN in one or two; 5 s is the Go peers' first report plus margin.
 */
export const CONNECT_TIMEOUT_MS = 5000;
/** How often a stall is reported again while it lasts (mesh/node.go stallRepeat). */
export const STALL_REPEAT_MS = 3000;

/**
 * @typedef {object} Sample
 * @property {number} now milliseconds, monotonic
 * @property {number} frames frames decoded from the current parent (resets with a new parent)
 * @property {boolean} connected the connection to the parent is up
 * @property {boolean} expected the parent should be sending (the stream is not offline, the client not closed)
 */

/**
 * @typedef {object} Verdict
 * @property {boolean} live media from this parent started playing at this sample: report 'live'
 * @property {boolean} stalled frames stopped (or never came) long enough: report 'stalled'
 * @property {boolean} playing frames advanced at this sample
 * @property {number} stallMs time since the previous sample that counted as stalled
 */

export class PlaybackMonitor {
  /** @param {{stallAfterMs?: number, firstFrameTimeoutMs?: number, connectTimeoutMs?: number, stallRepeatMs?: number}} [opts] */
  constructor(opts = {}) {
    this.stallAfterMs = opts.stallAfterMs ?? STALL_AFTER_MS;
    this.firstFrameTimeoutMs = opts.firstFrameTimeoutMs ?? FIRST_FRAME_TIMEOUT_MS;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
    this.stallRepeatMs = opts.stallRepeatMs ?? STALL_REPEAT_MS;
    /** Parent the samples are about. @type {string|null} */
    this.parent = null;
    this._frames = 0;
    this._lastFrameAt = 0;
    this._connectedAt = 0;
    this._lastSampleAt = 0;
    this._liveReported = false;
    /** When the current stall was last reported (0: not reported). */
    this._stallReportedAt = 0;
    /** When the current parent was assigned. */
    this._parentAt = 0;
    /** Whether the connection to the current parent has ever been up. */
    this._everConnected = false;
    /** Whether anything has ever played (stall time counts only after that). */
    this.everPlayed = false;
  }

  /** @param {number} now */
  _reset(now) {
    this._frames = 0;
    this._lastFrameAt = 0;
    this._connectedAt = 0;
    this._lastSampleAt = now;
    this._liveReported = false;
    this._stallReportedAt = 0;
    this._parentAt = now;
    this._everConnected = false;
  }

  /**
   * Starts watching a new parent (or none); frames count from zero again.
   * @param {string|null} parent
   * @param {number} now
   */
  setParent(parent, now) {
    this.parent = parent;
    this._reset(now);
  }

  /**
   * @param {Sample} s
   * @returns {Verdict}
   */
  sample(s) {
    const dt = Math.max(0, s.now - this._lastSampleAt);
    this._lastSampleAt = s.now;
    /** @type {Verdict} */
    const v = { live: false, stalled: false, playing: false, stallMs: 0 };
    if (s.frames < this._frames) this._frames = s.frames; // a counter reset: start over quietly
    if (s.connected && !this._connectedAt) this._connectedAt = s.now;
    if (!s.connected) this._connectedAt = 0;
    if (s.connected) this._everConnected = true;

    if (s.frames > this._frames) {
      this._frames = s.frames;
      this._lastFrameAt = s.now;
      this._stallReportedAt = 0;
      this.everPlayed = true;
      v.playing = true;
      if (!this._liveReported && this.parent) {
        this._liveReported = true;
        v.live = true;
      }
      return v;
    }
    if (!s.expected) return v;
    // No new frame while the stream should play: the gap counts as stall time
    // once something has played (joining is not a stall).
    if (this.everPlayed) v.stallMs = dt;
    if (!this.parent) return v;
    let stalled;
    if (!this._everConnected) {
      stalled = s.now - this._parentAt > this.connectTimeoutMs; // it never even connected
    } else if (!s.connected) {
      return v; // a blip may recover; a failed connection rejoins (client.js)
    } else {
      stalled = this._lastFrameAt
        ? s.now - this._lastFrameAt > this.stallAfterMs
        : s.now - this._connectedAt > this.firstFrameTimeoutMs;
    }
    if (stalled && (!this._stallReportedAt || s.now - this._stallReportedAt >= this.stallRepeatMs)) {
      this._stallReportedAt = s.now;
      v.stalled = true;
    }
    return v;
  }
}
