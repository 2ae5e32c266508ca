// Link ids (protocol.go, Signal.Link). The offerer picks one for each
// connection it makes and sends it with its offer and candidates; the
// answerer sends back the link of the offer it answered. Two peers that
// tear a link down and make a new one at once (a standby parent planned
// away and back) still have signals of the old link on their way: each
// side drops a signal of a link other than its connection's, and an offer
// of another link on a connection that has one is a new connection's.
// 0 (a peer that names no link) matches any.

/** @typedef {import('./protocol.js').Signal} Signal */

/** @type {WeakMap<RTCPeerConnection, number>} */
const links = new WeakMap();

/** A new link id for a connection this tab offers on: random, never 0. @returns {number} */
export function newLinkId() {
  const a = new Uint32Array(1);
  do crypto.getRandomValues(a); while (a[0] === 0);
  return a[0];
}

/** @param {RTCPeerConnection} pc @returns {number} the link pc belongs to, 0 none yet */
export function linkOf(pc) {
  return links.get(pc) ?? 0;
}

/** @param {RTCPeerConnection} pc @param {number} id */
export function setLink(pc, id) {
  if (id) links.set(pc, id);
}

/**
 * Whether a signal naming `link` belongs to the connection whose link is
 * `own`: it names none, the connection has none yet, or the same.
 * @param {number} own @param {number|undefined} link
 */
export function sameLink(own, link) {
  return !link || !own || link === own;
}

/** @param {RTCPeerConnection} pc @param {Signal} sig */
export function ofLink(pc, sig) {
  return sameLink(linkOf(pc), sig.link);
}

/**
 * Whether `sig` is an offer for a new connection on one whose offer was
 * applied already: it names another link, or none (a parent that names no
 * links makes a new connection whenever it offers again).
 * @param {RTCPeerConnection} pc @param {Signal} sig
 */
export function reoffered(pc, sig) {
  if (sig.kind !== 'offer' || !pc.remoteDescription) return false;
  const own = linkOf(pc);
  return !sig.link || !own || sig.link !== own;
}

/** `sig` with pc's link on it. @param {RTCPeerConnection} pc @param {Signal} sig @returns {Signal} */
export function stamped(pc, sig) {
  const link = linkOf(pc);
  return link ? { ...sig, link } : sig;
}
