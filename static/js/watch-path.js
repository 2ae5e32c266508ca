// The stream name in a page path: /watch/<stream> or /embed/<stream>.

import { validID } from './protocol.js';

/**
 * @param {string} [path] location.pathname by default
 * @returns {string|null} the last path segment when it is a valid stream name, else null
 */
export function streamFromPath(path = globalThis.location?.pathname ?? '') {
  const last = path.replace(/\/+$/, '').split('/').pop() ?? '';
  try {
    const name = decodeURIComponent(last);
    return validID(name) ? name : null;
  } catch {
    return null;
  }
}
