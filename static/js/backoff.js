// Reconnect delays: exponential backoff with jitter, as a pure function so
// the schedule is testable without timers.

/** Delay of the first retry, in milliseconds. */
export const BACKOFF_BASE_MS = 500;
/** Longest delay between retries, in milliseconds. */
export const BACKOFF_MAX_MS = 10000;
/** Fraction of the delay that jitter may take away (0 = no jitter). */
export const BACKOFF_JITTER = 0.25;

/**
 * Returns how long to wait before retry number `attempt` (0 for the first).
 * The delay doubles from `base` up to `max`; jitter then shortens it by up to
 * `jitter` of itself, so that many tabs dropped at once do not return in step.
 *
 * @param {number} attempt retries already made, >= 0
 * @param {{base?: number, max?: number, jitter?: number, random?: () => number}} [opts]
 *   `random` returns a number in [0, 1); Math.random by default.
 * @returns {number} milliseconds, an integer in [(1-jitter)*d, d] where d = min(max, base*2^attempt)
 */
export function backoffDelay(attempt, opts = {}) {
  const base = opts.base ?? BACKOFF_BASE_MS;
  const max = opts.max ?? BACKOFF_MAX_MS;
  const jitter = Math.min(Math.max(opts.jitter ?? BACKOFF_JITTER, 0), 1);
  const random = opts.random ?? Math.random;
  const n = Number.isFinite(attempt) && attempt > 0 ? Math.floor(attempt) : 0;
  // 2^n overflows to Infinity for large n; min() keeps it at max.
  const d = Math.min(max, base * Math.pow(2, n));
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.round(d * (1 - jitter * r));
}
