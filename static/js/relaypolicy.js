// Whether this tab offers to relay the stream to other viewers, and to how
// many. The server clamps what a browser claims (BrowserMaxCapacity, 2 by
// default) and bounds browser re-encode hops; the tab only opts in or out.

/** Children a browser offers to feed when it relays. */
export const DEFAULT_RELAY_CAPACITY = 2;

/** localStorage key of the viewer's choice ('1' relay, '0' do not). */
export const RELAY_STORAGE_KEY = 'canopy.relay';

/**
 * @typedef {object} RelayInputs
 * @property {string|null} [param] the page's ?relay= value, if any
 * @property {string|null} [stored] the viewer's remembered choice, if any
 * @property {{saveData?: boolean, type?: string, effectiveType?: string}|null} [connection] navigator.connection
 */

/**
 * Reports whether the connection looks metered or constrained: Data Saver
 * is on, or the network is cellular or a slow generation.
 * @param {RelayInputs['connection']} c
 * @returns {boolean}
 */
export function looksMetered(c) {
  if (!c) return false;
  if (c.saveData) return true;
  if (c.type === 'cellular') return true;
  return c.effectiveType === 'slow-2g' || c.effectiveType === '2g';
}

/**
 * @param {string|null|undefined} v
 * @returns {boolean|null} true/false for a recognised on/off value, null otherwise
 */
function parseSwitch(v) {
  if (v == null) return null;
  const s = v.trim().toLowerCase();
  if (['1', 'true', 'on', 'yes'].includes(s)) return true;
  if (['0', 'false', 'off', 'no'].includes(s)) return false;
  return null;
}

/**
 * Decides the capacity to claim in the hello. The page parameter wins, then
 * the viewer's remembered choice, then the connection: metered connections
 * opt out by default, everyone else relays.
 * @param {RelayInputs} inputs
 * @returns {number} 0 or DEFAULT_RELAY_CAPACITY
 */
export function relayCapacity(inputs) {
  const choice = parseSwitch(inputs.param) ?? parseSwitch(inputs.stored);
  if (choice !== null) return choice ? DEFAULT_RELAY_CAPACITY : 0;
  return looksMetered(inputs.connection) ? 0 : DEFAULT_RELAY_CAPACITY;
}

/**
 * relayCapacity from the browser's own state: the page URL, localStorage and
 * navigator.connection. Storage may be unavailable (a sandboxed iframe).
 * @param {string} [search] location.search by default
 * @returns {number}
 */
export function browserRelayCapacity(search = globalThis.location?.search ?? '') {
  let stored = null;
  try {
    stored = globalThis.localStorage?.getItem(RELAY_STORAGE_KEY) ?? null;
  } catch {
    // storage blocked: no remembered choice
  }
  const nav = /** @type {any} */ (globalThis.navigator);
  return relayCapacity({ param: new URLSearchParams(search).get('relay'), stored, connection: nav?.connection ?? null });
}
