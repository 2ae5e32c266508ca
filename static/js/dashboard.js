// The stream health dashboard at /stats/<stream>: polls
// /api/streams/<stream>/stats and draws the tree as SVG, one <g class="node">
// per peer coloured by health, edges labelled with what the child receives,
// and the stream's aggregate figures beside it.

/**
 * @typedef {object} PeerStats
 * @property {number} [bytesReceived]
 * @property {number} [packetsLost]
 * @property {number} [framesDecoded]
 * @property {number} [jitterMs]
 * @property {number} [delayMs]
 * @property {number} [stallMs]
 * @property {number} [framesVerified] frames it played after their signature verified
 * @property {number} [framesRejected] frames it refused as forged, unsigned or replayed
 * @property {'verified'|'unverified'|'tampered'} [verification] what the frames it plays now are
 */

/**
 * One node of GET /api/streams/<id>/stats.
 * @typedef {object} NodeView
 * @property {string} id
 * @property {string} parent
 * @property {'source'|'relay'|'viewer'} role
 * @property {'go'|'browser'|'whep'} kind  whep: a WHEP player, child of the server's relay
 * @property {number} capacity
 * @property {number} depth
 * @property {boolean} [queued]
 * @property {string[]} children
 * @property {string} state
 * @property {PeerStats} [stats]
 * @property {number} [statsAgeMs]
 * @property {number} bitrateKbps
 * @property {number} relayKbps
 * @property {number} loss
 * @property {boolean} [unverified] its frames cannot be checked: a hop above re-encodes (source-signed frames)
 * @property {boolean} [tampering] the server barred it for altering frames: it relays no more in this stream
 * @property {boolean} [noVerify] a browser that cannot check signatures (no receive transform): fed only by a parent that strips or re-encodes
 * @property {boolean} [strips] the server's relay: strips signatures for children that cannot check them
 */

/**
 * @typedef {object} Recovery
 * @property {string} peer
 * @property {string} from
 * @property {string} to
 * @property {number} ms
 * @property {string} at
 */

/**
 * @typedef {object} Figures
 * @property {number} peers
 * @property {number} queued
 * @property {number} depth
 * @property {number} sourceKbps
 * @property {number} audienceKbps
 * @property {number} sourceBytes
 * @property {number} relayedBytes
 * @property {number} deliveredBytes
 * @property {number} peerEfficiency
 * @property {Record<string, number>} joins
 * @property {number} joinSuccessRate
 * @property {number} medianFirstFrameMs
 * @property {number} firstFrameSamples
 * @property {number} stallSeconds
 * @property {number} viewerHours
 * @property {number} stallSecondsPerViewerHour
 * @property {number} reparents
 * @property {number} reports
 * @property {number} medianRecoveryMs
 * @property {Recovery[]} recoveries
 */

/**
 * @typedef {object} StatsResponse
 * @property {string} stream
 * @property {boolean} live
 * @property {NodeView[]} nodes
 * @property {Figures} figures
 */

const REFRESH_MS = 1500;
const SVG_NS = 'http://www.w3.org/2000/svg';
const COL = 156; // horizontal room per leaf: an edge label fits
const ROW = 124; // vertical room per depth
const PAD = 48;
const R = 16; // node radius
const LABEL_LIMIT = 80; // past this many nodes, edges lose their labels

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const stream = decodeURIComponent(location.pathname.split('/').filter(Boolean).pop() || '');
/** A private stream's token (?token=), sent to the stats API. @type {Record<string, string>} */
const authHeaders = {};
const pageToken = new URLSearchParams(location.search).get('token');
if (pageToken) authHeaders.Authorization = `Bearer ${pageToken}`;
const svg = /** @type {SVGSVGElement} */ (/** @type {unknown} */ ($('tree')));
const edgeLayer = /** @type {SVGGElement} */ (/** @type {unknown} */ ($('edges')));
const nodeLayer = /** @type {SVGGElement} */ (/** @type {unknown} */ ($('nodes')));

/** @type {Map<string, SVGGElement>} */
const nodeEls = new Map();
/** @type {Map<string, SVGGElement>} */
const edgeEls = new Map();

/** @param {number} kbps */
export function fmtRate(kbps) {
  if (!(kbps > 0)) return '0 kb/s';
  if (kbps >= 1000) return `${(kbps / 1000).toFixed(kbps >= 10000 ? 0 : 1)} Mb/s`;
  return `${Math.round(kbps)} kb/s`;
}

/** @param {number} n */
export function fmtBytes(n) {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(n >= 100 || i === 0 ? 0 : 1)} ${units[i]}`;
}

/** @param {number} ms */
export function fmtMs(ms) {
  if (!(ms > 0)) return '—';
  return ms >= 1000 ? `${(ms / 1000).toFixed(ms >= 10000 ? 0 : 1)} s` : `${Math.round(ms)} ms`;
}

/** @param {number} f @param {number} [digits] */
const pct = (f, digits = 0) => `${(f * 100).toFixed(digits)}%`;

/** @param {number} f fraction of packets lost */
export function fmtLoss(f) {
  if (!(f > 0)) return '0% loss';
  if (f < 0.001) return '<0.1% loss';
  return `${pct(f, f < 0.1 ? 1 : 0)} loss`;
}

/** @param {string} id */
const short = (id) => (id.length > 7 ? id.slice(-6) : id);

/**
 * Lays the tree out top-down: leaves side by side, each parent centred over
 * its children; queued peers on a row of their own below.
 * @param {NodeView[]} nodes
 * @returns {{pos: Map<string, {x: number, y: number}>, width: number, height: number, queueY: number}}
 */
export function layout(nodes) {
  const byID = new Map(nodes.map((n) => [n.id, n]));
  const roots = nodes.filter((n) => !n.queued && (!n.parent || !byID.has(n.parent)));
  roots.sort((a, b) => (a.role === 'source' ? -1 : b.role === 'source' ? 1 : a.id.localeCompare(b.id)));
  /** @type {Map<string, {x: number, y: number}>} */
  const pos = new Map();
  let next = 0;
  let deepest = 0;
  /** @param {NodeView} n @param {number} d @returns {number} */
  const place = (n, d) => {
    deepest = Math.max(deepest, d);
    const kids = (n.children || []).map((id) => byID.get(id)).filter((k) => k !== undefined);
    let x;
    if (kids.length === 0) {
      x = next++;
    } else {
      const xs = kids.map((k) => place(/** @type {NodeView} */ (k), d + 1));
      x = (xs[0] + xs[xs.length - 1]) / 2;
    }
    pos.set(n.id, { x: PAD + x * COL + COL / 2, y: PAD + d * ROW });
    return x;
  };
  for (const r of roots) place(r, 0);
  const queued = nodes.filter((n) => n.queued);
  const queueY = PAD + (deepest + 1) * ROW + (queued.length ? 20 : 0);
  queued.forEach((n, i) => pos.set(n.id, { x: PAD + i * COL + COL / 2, y: queueY }));
  const cols = Math.max(next, queued.length, 1);
  const height = queued.length ? queueY + PAD + 24 : PAD + deepest * ROW + PAD + 24;
  return { pos, width: PAD * 2 + cols * COL, height, queueY };
}

/**
 * @param {string} tag
 * @param {Record<string, string | number>} [attrs]
 */
function el(tag, attrs = {}) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

/** @param {NodeView} n */
function nodeTitle(n) {
  const lines = [`${n.role} · ${n.kind} · ${n.id}`, `state: ${n.state}`];
  if (n.role !== 'source') lines.push(n.queued ? 'queued for a slot' : `depth ${n.depth} under ${n.parent || '—'}`);
  lines.push(`children ${n.children.length} of ${n.capacity}`);
  if (n.tampering) lines.push('barred from relaying: it altered frames (children caught it)');
  if (n.noVerify) lines.push('frames unverified: no transform (this browser cannot check them; fed without signatures)');
  else if (n.unverified) lines.push('frames unverified: a browser above re-encodes them');
  if (n.strips) lines.push('strips signatures for children that cannot check them');
  if (n.stats) {
    if (n.role !== 'source') lines.push(`receives ${fmtRate(n.bitrateKbps)}, ${fmtLoss(n.loss)}`);
    if (n.relayKbps > 0) lines.push(`relays ${fmtRate(n.relayKbps)}`);
    if (n.stats.jitterMs) lines.push(`jitter ${n.stats.jitterMs.toFixed(1)} ms`);
    if (n.stats.delayMs) lines.push(`delay from source ${fmtMs(n.stats.delayMs)}`);
    if (n.stats.stallMs) lines.push(`stalled ${fmtMs(n.stats.stallMs)} in total`);
    if (n.stats.verification) {
      lines.push(`frames ${n.stats.verification}: ${n.stats.framesVerified ?? 0} verified, ${n.stats.framesRejected ?? 0} rejected`);
    }
  } else {
    lines.push('no stats reported yet');
  }
  return lines.join('\n');
}

/**
 * The node's label for signed frames, from its last report: what its
 * player's stats panel shows ("verified 1234"), '' when it says nothing.
 * @param {PeerStats|undefined} s
 */
export function verifyLabel(s) {
  switch (s?.verification) {
    case 'verified': return `verified ${s.framesVerified ?? 0}`;
    case 'tampered': return `tampered (${s.framesRejected ?? 0} rejected)`;
    case 'unverified': return 'unverified';
  }
  return '';
}

/** @param {NodeView} n */
function glyph(n) {
  if (n.role === 'source') return 'S';
  if (n.role === 'relay') return 'R';
  if (n.kind === 'whep') return 'W';
  return n.kind === 'browser' ? 'B' : 'V';
}

/**
 * What an edge says about signed frames: 'tampered' when its parent was
 * barred for altering frames (children it still feeds are about to move),
 * 'unverified' when the child's frames cannot be checked (a re-encoding hop
 * above), '' when its frames are checked end to end.
 * @param {NodeView} n the child
 * @param {NodeView|undefined} parent
 * @returns {'tampered'|'unverified'|''}
 */
export function edgeTrust(n, parent) {
  if (parent?.tampering) return 'tampered';
  if (n.unverified) return 'unverified';
  return '';
}

/** @param {NodeView[]} nodes */
function drawTree(nodes) {
  const { pos, width, height, queueY } = layout(nodes);
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.style.aspectRatio = `${width} / ${height}`;
  svg.style.maxWidth = `${Math.max(width, 480)}px`;
  $('tree-empty').hidden = nodes.length > 0;
  const byID = new Map(nodes.map((n) => [n.id, n]));
  const labels = nodes.length <= LABEL_LIMIT;

  // Edges: one per placed child, labelled with what it receives.
  const seenEdges = new Set();
  for (const n of nodes) {
    const from = pos.get(n.parent);
    const to = pos.get(n.id);
    if (!n.parent || n.queued || !from || !to) continue;
    seenEdges.add(n.id);
    let g = edgeEls.get(n.id);
    if (!g) {
      g = /** @type {SVGGElement} */ (el('g', { class: 'edge' }));
      g.append(el('path'), el('rect', { class: 'edge-label-bg', rx: 4 }), el('text', { class: 'edge-label' }));
      edgeLayer.append(g);
      edgeEls.set(n.id, g);
    }
    const [path, bg, text] = /** @type {[SVGPathElement, SVGRectElement, SVGTextElement]} */ (/** @type {unknown} */ ([...g.children]));
    const startY = from.y + R + 38; // below the parent's name and figures
    const midY = (startY + to.y) / 2;
    path.setAttribute('d', `M${from.x},${startY} C${from.x},${midY} ${to.x},${midY} ${to.x},${to.y - R}`);
    const severity = !n.stats ? 'none' : n.loss > 0.05 ? 'bad' : n.loss > 0.01 ? 'warn' : 'ok';
    g.setAttribute('data-severity', severity);
    const trust = edgeTrust(n, byID.get(n.parent));
    if (trust) g.setAttribute('data-trust', trust);
    else g.removeAttribute('data-trust');
    const rate = n.stats ? `${fmtRate(n.bitrateKbps)} · ${fmtLoss(n.loss)}` : '';
    const label = trust === 'tampered' ? 'tampered' : trust === 'unverified' ? (rate ? `${rate} · unverified` : 'unverified') : rate;
    text.textContent = labels ? label : '';
    // The label sits on the edge just above the child, where the curve
    // runs vertical and siblings' labels are a column apart.
    const lx = to.x;
    const ly = to.y - R - 22;
    text.setAttribute('x', String(lx));
    text.setAttribute('y', String(ly));
    const w = label.length * 6.2 + 10;
    bg.setAttribute('x', String(lx - w / 2));
    bg.setAttribute('y', String(ly - 12));
    bg.setAttribute('width', String(w));
    bg.setAttribute('height', '17');
    bg.style.display = labels && label ? '' : 'none';
  }
  for (const [id, g] of edgeEls) {
    if (!seenEdges.has(id)) { g.remove(); edgeEls.delete(id); }
  }

  // Queue caption.
  let caption = /** @type {SVGTextElement | null} */ (svg.querySelector('.queue-caption'));
  const anyQueued = nodes.some((n) => n.queued);
  if (anyQueued && !caption) {
    caption = /** @type {SVGTextElement} */ (el('text', { class: 'queue-caption', x: 12 }));
    caption.textContent = 'waiting for a slot';
    svg.insertBefore(caption, nodeLayer);
  }
  if (caption) {
    if (anyQueued) caption.setAttribute('y', String(queueY - R - 14));
    else caption.remove();
  }

  // Nodes.
  for (const n of nodes) {
    const p = pos.get(n.id);
    if (!p) continue;
    let g = nodeEls.get(n.id);
    if (!g) {
      g = /** @type {SVGGElement} */ (el('g', { class: 'node', tabindex: 0 }));
      g.dataset.id = n.id;
      const title = el('title');
      const ring = el('circle', { class: 'ring', r: R + 5 });
      const dot = el('circle', { class: 'dot', r: R });
      const letter = el('text', { class: 'glyph', y: 5 });
      const name = el('text', { class: 'name', y: R + 17 });
      const sub = el('text', { class: 'sub', y: R + 31 });
      const verify = el('text', { class: 'verify', y: R + 44 });
      g.append(title, ring, dot, letter, name, sub, verify);
      nodeLayer.append(g);
      nodeEls.set(n.id, g);
    }
    g.setAttribute('transform', `translate(${p.x},${p.y})`);
    g.setAttribute('class', `node state-${n.state} role-${n.role} kind-${n.kind}${n.tampering ? ' tampering' : ''}`);
    g.setAttribute('aria-label', `${n.role} ${short(n.id)}, ${n.state}`);
    const [title, , , letter, name, sub, verify] = /** @type {SVGElement[]} */ ([...g.children]);
    title.textContent = nodeTitle(n);
    letter.textContent = glyph(n);
    name.textContent = short(n.id);
    sub.textContent = n.role === 'source'
      ? (n.relayKbps > 0 ? `↑ ${fmtRate(n.relayKbps)}` : `${n.children.length}/${n.capacity}`)
      : n.capacity > 0 ? `${n.children.length}/${n.capacity} · ${n.kind}` : n.kind;
    verify.textContent = verifyLabel(n.stats);
    verify.setAttribute('class', `verify verify-${n.stats?.verification || 'none'}`);
  }
  for (const [id, g] of nodeEls) {
    if (!byID.has(id)) { g.remove(); nodeEls.delete(id); }
  }
  $('tree-desc').textContent = `Tree of ${nodes.length} peers: ${countStates(nodes)}.`;
}

/** @param {NodeView[]} nodes */
function countStates(nodes) {
  /** @type {Record<string, number>} */
  const by = {};
  for (const n of nodes) by[n.state] = (by[n.state] || 0) + 1;
  return Object.entries(by).map(([s, k]) => `${k} ${s}`).join(', ');
}

/** @param {string} id @param {string} text */
const set = (id, text) => { $(id).textContent = text; };

/** @param {StatsResponse} r */
function drawFigures(r) {
  const f = r.figures;
  set('f-peers', String(f.peers));
  set('f-peers-sub', f.queued ? `${f.queued} queued` : 'none queued');
  set('f-source', fmtRate(f.sourceKbps));
  set('f-source-sub', `audience receives ${fmtRate(f.audienceKbps)}`);
  const share = f.audienceKbps > 0 ? Math.min(1, f.sourceKbps / f.audienceKbps) : 0;
  $('f-source-bar').style.width = `${(share * 100).toFixed(1)}%`;
  set('f-eff', f.deliveredBytes || f.relayedBytes ? pct(f.peerEfficiency) : '—');
  set('f-depth', String(f.depth));
  set('f-depth-sub', f.peers > 1 ? `log₂ of audience ≈ ${Math.log2(f.peers + 1).toFixed(1)}` : 'hops from the source');
  const joins = Object.values(f.joins || {}).reduce((a, b) => a + b, 0);
  set('f-joins', joins ? pct(f.joinSuccessRate) : '—');
  set('f-joins-sub', joins ? Object.entries(f.joins).map(([k, v]) => `${v} ${k.replace('_', ' ')}`).join(' · ') : 'no joins yet');
  set('f-ttff', fmtMs(f.medianFirstFrameMs));
  set('f-ttff-sub', f.firstFrameSamples ? `median of ${f.firstFrameSamples}` : 'median, no samples yet');
  set('f-stall', f.viewerHours > 0 ? `${f.stallSecondsPerViewerHour.toFixed(f.stallSecondsPerViewerHour < 10 ? 1 : 0)} s` : '—');
  set('f-stall-sub', `per viewer-hour · ${f.stallSeconds.toFixed(1)} s in ${(f.viewerHours * 60).toFixed(1)} min`);
  set('f-recov', String(f.reparents));
  set('f-recov-sub', f.medianRecoveryMs ? `re-parents · median ${fmtMs(f.medianRecoveryMs)} to live` : 're-parents');

  set('t-audience', fmtRate(f.audienceKbps));
  set('t-source-bytes', fmtBytes(f.sourceBytes));
  set('t-relayed', fmtBytes(f.relayedBytes));
  set('t-delivered', fmtBytes(f.deliveredBytes));
  set('t-reports', String(f.reports));

  const list = $('recoveries');
  list.replaceChildren(...(f.recoveries || []).map((rc) => {
    const li = document.createElement('li');
    const when = new Date(rc.at);
    li.innerHTML = '<span class="rc-peer"></span><span class="rc-path"></span><span class="rc-ms"></span><time></time>';
    /** @type {HTMLElement} */ (li.children[0]).textContent = short(rc.peer);
    /** @type {HTMLElement} */ (li.children[1]).textContent = `${short(rc.from)} → ${short(rc.to)}`;
    /** @type {HTMLElement} */ (li.children[2]).textContent = fmtMs(rc.ms);
    const t = /** @type {HTMLTimeElement} */ (li.children[3]);
    t.dateTime = rc.at;
    t.textContent = when.toLocaleTimeString();
    return li;
  }));
  $('recov-empty').hidden = (f.recoveries || []).length > 0;
}

/** @param {'live'|'offline'|'ended'|'error'|'loading'} state @param {string} text */
function status(state, text) {
  const s = $('status');
  s.dataset.state = state;
  s.textContent = text;
}

async function refresh() {
  try {
    const res = await fetch(`/api/streams/${encodeURIComponent(stream)}/stats`, { cache: 'no-store', headers: authHeaders });
    if (res.status === 404) {
      status('ended', 'no such stream');
      drawTree([]);
      return;
    }
    if (!res.ok) throw new Error(res.statusText);
    /** @type {StatsResponse} */
    const r = await res.json();
    drawTree(r.nodes);
    drawFigures(r);
    status(r.live ? 'live' : 'offline', r.live ? 'live' : 'source offline');
    document.body.dataset.updated = String(Date.now());
  } catch (e) {
    status('error', 'cannot reach the server');
  }
}

// A hidden tab stops asking; it catches up on the next tick once visible.
async function loop() {
  if (!document.hidden) await refresh();
  setTimeout(loop, REFRESH_MS);
}

if (stream) {
  document.title = `${stream} · health · Canopy`;
  set('title', stream);
  /** @type {HTMLAnchorElement} */ ($('watch-link')).href = `/watch/${encodeURIComponent(stream)}`;
  loop();
}
