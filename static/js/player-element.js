// <canopy-player stream="…" server="…">: the Canopy player as a web
// component, used by the watch page, the iframe embed and other sites (through
// /embed.js). It runs a CanopyClient against its server (the `server`
// attribute, or the origin this module was loaded from), shows the stream's
// state, and re-dispatches the client's changes as DOM events: live, stalled,
// reconnecting, offline, parentchange (and statechange with every state).
//
// Attributes: stream (required), server (one address, or several separated
// by commas: the servers of one cluster, tried in turn on connect and when
// the player resumes after its connection dropped), muted ("0" starts with sound, which
// browsers may refuse), autoplay ("0" waits for a click), controls ("0" hides
// them), relay ("0" opts out of relaying, "1" opts in; otherwise the viewer's
// remembered choice or the connection decides), stats ("1" shows the
// figures panel at start), token (a viewing token, for a private stream),
// passthrough ("0" relays by re-encoding even in a browser that can pass
// frames through; for comparisons),
// private ("1" watches in private mode: through the server's TURN relay
// only, so no other viewer learns this one's address, and never relaying).

import { CanopyClient } from './client.js';
import { validID } from './protocol.js';
import { browserRelayCapacity, relayCapacity, RELAY_STORAGE_KEY } from './relaypolicy.js';
import { formatBitrate, formatMs, relayLabel, sentence } from './format.js';
import { PLAYER_CSS } from './player-style.js';

/** @typedef {import('./client.js').Snapshot} Snapshot */
/** @typedef {import('./client.js').State | 'idle' | 'error'} PlayerState */

/** The server this module came from: the default for the server attribute. */
const MODULE_ORIGIN = new URL(import.meta.url).origin;

const ICON = {
  muted: '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M3 9v6h4l5 5V4L7 9H3zm13.6 3 2.7-2.7-1.4-1.4-2.7 2.7-2.7-2.7-1.4 1.4 2.7 2.7-2.7 2.7 1.4 1.4 2.7-2.7 2.7 2.7 1.4-1.4-2.7-2.7z"/></svg>',
  sound: '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M3 9v6h4l5 5V4L7 9H3zm13.5 3A4.5 4.5 0 0 0 14 8v8a4.5 4.5 0 0 0 2.5-4zM14 3.2v2.1a7 7 0 0 1 0 13.4v2.1a9 9 0 0 0 0-17.6z"/></svg>',
  stats: '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 20h3V10H4v10zm6.5 0h3V4h-3v16zM17 20h3v-7h-3v7z"/></svg>',
  fullscreen: '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M5 5h5V3H3v7h2V5zm9-2v2h5v5h2V3h-7zm5 16h-5v2h7v-7h-2v5zM5 14H3v7h7v-2H5v-5z"/></svg>',
  play: '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M7 4v16l13-8z"/></svg>',
  offline: '<svg class="icon-big" viewBox="0 0 24 24" aria-hidden="true"><path d="M21 6.5 17 10.5V7a1 1 0 0 0-1-1H6.8L21 20.2 19.7 21.5 2.5 4.3 3.8 3l2 2H4a1 1 0 0 0-1 1v10a1 1 0 0 0 1 1h12l1-1v-2.5l4 4v-11z"/></svg>',
};

/** Badge label and overlay title of each state. @type {Record<PlayerState, [string, string]>} */
const LABELS = {
  idle: ['ready', ''],
  connecting: ['connecting', 'Connecting…'],
  live: ['live', ''],
  reconnecting: ['reconnecting', 'Reconnecting…'],
  offline: ['offline', 'This stream is offline'],
  ended: ['ended', 'The broadcast has ended'],
  closed: ['stopped', 'Stopped'],
  error: ['error', 'Something went wrong'],
};

/** Overlay detail lines that explain a state better than the client's reason. */
const DETAILS = {
  offline: 'It will start playing here as soon as it goes live.',
  ended: 'Stay on this page: if it comes back, it will play here.',
};

const TEMPLATE = `
<div class="player" part="player" data-state="connecting" data-muted="true">
  <video playsinline autoplay muted part="video"></video>
  <div class="overlay" part="overlay">
    <div class="spinner" aria-hidden="true"></div>
    ${ICON.offline}
    <button class="play" type="button" aria-label="Play">${ICON.play}</button>
    <p class="title" id="title">Connecting…</p>
    <p class="detail" id="detail"></p>
  </div>
  <span class="badge" id="badge" role="status" aria-live="polite">connecting</span>
  <button class="unmute-hint" type="button" id="hint">${ICON.muted}<span>Tap to unmute</span></button>
  <div class="panel" id="panel" hidden part="panel">
    <dl>
      <dt>latency</dt><dd id="p-latency">—</dd>
      <dt>bitrate</dt><dd id="p-bitrate">—</dd>
      <dt>depth</dt><dd id="p-depth">—</dd>
      <dt>video</dt><dd id="p-video">—</dd>
      <dt>relaying to</dt><dd id="p-relay">—</dd>
      <dt>relay mode</dt><dd id="p-mode">—</dd>
      <dt>frames</dt><dd id="p-signed" title="Whether each frame carries the source's signature, checked before it is played">—</dd>
      <dt>address</dt><dd id="p-privacy" title="Private mode: you connect through the server's TURN relay, so no other viewer learns your network address">—</dd>
    </dl>
  </div>
  <div class="controls" part="controls">
    <button type="button" id="mute" aria-label="Unmute" aria-pressed="false">${ICON.muted}</button>
    <span class="spacer"></span>
    <button type="button" id="stats" aria-label="Stats for nerds" aria-pressed="false">${ICON.stats}</button>
    <button type="button" id="fullscreen" aria-label="Fullscreen">${ICON.fullscreen}</button>
  </div>
</div>`;

/** The player's stylesheet, built once and shared by every player on the page. @type {CSSStyleSheet|null} */
let sheet = null;

/**
 * Styles a player's shadow root. A constructed stylesheet is not an inline
 * style, so neither Canopy's pages nor an embedding site's need
 * style-src 'unsafe-inline' in their CSP; browsers without constructable
 * stylesheets get a <style> element.
 * @param {ShadowRoot} root
 */
function adoptStyle(root) {
  if ('adoptedStyleSheets' in root && typeof CSSStyleSheet !== 'undefined' && 'replaceSync' in CSSStyleSheet.prototype) {
    if (!sheet) {
      sheet = new CSSStyleSheet();
      sheet.replaceSync(PLAYER_CSS);
    }
    root.adoptedStyleSheets = [sheet];
    return;
  }
  const style = document.createElement('style');
  style.textContent = PLAYER_CSS;
  root.prepend(style);
}

export class CanopyPlayer extends HTMLElement {
  static get observedAttributes() { return ['stream', 'server', 'relay', 'private']; }

  constructor() {
    super();
    const root = this.attachShadow({ mode: 'open' });
    root.innerHTML = TEMPLATE;
    adoptStyle(root);
    /** @param {string} id */
    const $ = (id) => /** @type {HTMLElement} */ (root.getElementById(id));
    /** The element that plays the stream. */
    this.video = /** @type {HTMLVideoElement} */ (root.querySelector('video'));
    this._player = /** @type {HTMLElement} */ (root.querySelector('.player'));
    this._ui = {
      title: $('title'), detail: $('detail'), badge: $('badge'), hint: $('hint'), panel: $('panel'),
      mute: $('mute'), stats: $('stats'), fullscreen: $('fullscreen'),
      latency: $('p-latency'), bitrate: $('p-bitrate'), depth: $('p-depth'), res: $('p-video'), relay: $('p-relay'), mode: $('p-mode'),
      privacy: $('p-privacy'), signed: $('p-signed'),
      play: /** @type {HTMLElement} */ (root.querySelector('.play')),
    };
    /** The client playing the stream; null until started. @type {CanopyClient|null} */
    this.client = null;
    /** @type {PlayerState} */
    this._state = 'connecting';
    this._wireControls();
  }

  /** The player's state: idle, connecting, live, reconnecting, offline, ended, closed or error. */
  get state() { return this._state; }

  /** The last measurements (see CanopyClient Snapshot); null before the first. @returns {Snapshot|null} */
  get stats() { return this.client?.snapshot ?? null; }

  /** Whether the sound is off. */
  get muted() { return this.video.muted; }
  set muted(v) {
    this.video.muted = !!v;
    if (!v) this.video.play().catch(() => {});
  }

  /** Whether this player watches in private mode: asked for (private="1") or set by the server. */
  get private() { return this.getAttribute('private') === '1' || !!this.client?.private; }

  /** Children this player offers to feed, from the relay attribute and the viewer's settings. */
  get relayCapacity() {
    if (this.getAttribute('private') === '1') return 0;
    const attr = this.getAttribute('relay');
    if (attr !== null) return relayCapacity({ param: attr });
    return browserRelayCapacity('');
  }

  connectedCallback() {
    // Focusable, so the keyboard shortcuts work (not in the constructor: a
    // custom element may not add attributes while it is being created).
    if (!this.hasAttribute('tabindex')) this.tabIndex = 0;
    if (this.getAttribute('muted') === '0') this.video.muted = false;
    if (this.getAttribute('stats') === '1') this.toggleStats(true);
    this._syncMute();
    if (this.client) return;
    if (this.getAttribute('autoplay') === '0') {
      this._show('idle');
      return;
    }
    this.play();
  }

  disconnectedCallback() {
    // A player moved within the page is disconnected and connected again
    // in one task; only a player that stays out is stopped.
    queueMicrotask(() => { if (!this.isConnected) this.stop(); });
  }

  /** @param {string} name @param {string|null} old @param {string|null} value */
  attributeChangedCallback(name, old, value) {
    if (old === value || !this.client) return;
    if (name === 'relay') {
      this.client.setCapacity(this.relayCapacity);
      return;
    }
    // A new stream, server or privacy mode: start over (every connection's
    // ICE policy changes with private mode).
    this.stop();
    this.play();
  }

  /** Starts playing (autoplay="0" waits for this or a click). */
  play() {
    if (this.client && this.client.state !== 'closed') return;
    const stream = this.getAttribute('stream') ?? '';
    if (!validID(stream)) {
      this._show('error', 'No such stream', 'The stream name is missing or invalid.');
      return;
    }
    let server = MODULE_ORIGIN;
    const attr = this.getAttribute('server');
    if (attr) {
      try {
        server = serverOrigins(attr);
      } catch {
        this._show('error', 'Bad server address', attr);
        return;
      }
    }
    const client = new CanopyClient({
      server, stream, capacity: this.relayCapacity, token: this.getAttribute('token') || undefined,
      passthrough: this.getAttribute('passthrough') !== '0',
      private: this.getAttribute('private') === '1',
    });
    this.client = client;
    client.addEventListener('statechange', (ev) => {
      const { state, reason } = /** @type {CustomEvent} */ (ev).detail;
      this._onState(state, reason);
    });
    client.addEventListener('track', (ev) => {
      const { stream: media } = /** @type {CustomEvent} */ (ev).detail;
      if (this.video.srcObject !== media) this.video.srcObject = media;
      this._tryPlay();
    });
    client.addEventListener('parentchange', (ev) => this._emit('parentchange', /** @type {CustomEvent} */ (ev).detail));
    client.addEventListener('stalled', (ev) => this._emit('stalled', /** @type {CustomEvent} */ (ev).detail));
    client.addEventListener('stats', (ev) => this._renderStats(/** @type {CustomEvent} */ (ev).detail));
    client.addEventListener('children', () => { if (client.snapshot) this._renderStats(client.snapshot); });
    client.addEventListener('error', (ev) => {
      const { code, reason } = /** @type {CustomEvent} */ (ev).detail;
      if (code === 'full') {
        this._show('connecting', 'The stream is full', 'You are in line and will start as soon as a slot frees up.');
      } else if (code !== 'not_found' && client.state !== 'live') {
        this._show('error', 'Something went wrong', reason || code);
      }
    });
    this._show('connecting');
    client.start();
  }

  /** Leaves the stream. */
  stop() {
    const client = this.client;
    this.client = null;
    client?.close();
    this.video.srcObject = null;
  }

  /** Shows or hides the figures panel. @param {boolean} [on] */
  toggleStats(on) {
    const show = on ?? this._ui.panel.hidden;
    this._ui.panel.hidden = !show;
    this._ui.stats.setAttribute('aria-pressed', String(show));
    if (show && this.client?.snapshot) this._renderStats(this.client.snapshot);
  }

  _tryPlay() {
    this.video.play().catch(() => {
      // Sound was refused without a gesture: play muted and offer to unmute.
      if (!this.video.muted) {
        this.video.muted = true;
        this.video.play().catch(() => {});
      }
    });
  }

  _wireControls() {
    const ui = this._ui;
    const toggleMute = () => { this.muted = !this.video.muted; };
    ui.mute.addEventListener('click', toggleMute);
    ui.hint.addEventListener('click', toggleMute);
    this.video.addEventListener('volumechange', () => this._syncMute());
    ui.stats.addEventListener('click', () => this.toggleStats());
    ui.play.addEventListener('click', () => this.play());
    const v = /** @type {any} */ (this.video);
    const canFullscreen = document.fullscreenEnabled || typeof v.webkitEnterFullscreen === 'function';
    if (!canFullscreen) ui.fullscreen.hidden = true;
    ui.fullscreen.addEventListener('click', () => this.toggleFullscreen());
    this._player.addEventListener('dblclick', () => this.toggleFullscreen());
    this.addEventListener('keydown', (ev) => {
      if (ev.target !== this) return;
      if (ev.key === 'm') toggleMute();
      else if (ev.key === 'f') this.toggleFullscreen();
      else if (ev.key === 'i') this.toggleStats();
    });
  }

  /** Enters or leaves fullscreen (iOS: the video element's own). */
  toggleFullscreen() {
    const v = /** @type {any} */ (this.video);
    if (document.fullscreenElement) {
      document.exitFullscreen().catch(() => {});
    } else if (this.requestFullscreen && document.fullscreenEnabled) {
      this.requestFullscreen().catch(() => {});
    } else if (typeof v.webkitEnterFullscreen === 'function') {
      v.webkitEnterFullscreen();
    }
  }

  _syncMute() {
    const muted = this.video.muted;
    this._player.dataset.muted = String(muted);
    this._ui.mute.innerHTML = muted ? ICON.muted : ICON.sound;
    this._ui.mute.setAttribute('aria-label', muted ? 'Unmute' : 'Mute');
    this._ui.mute.setAttribute('aria-pressed', String(!muted));
  }

  /** @param {import('./client.js').State} state @param {string} reason */
  _onState(state, reason) {
    const prev = this._state;
    if (state === 'offline' || state === 'ended') {
      this._show(state, undefined, DETAILS[state]);
    } else {
      this._show(state, undefined, state === 'live' ? '' : sentence(reason, '…'));
    }
    if (prev === state) return;
    this._emit('statechange', { state, reason });
    if (state === 'live') {
      this._tryPlay();
      this._emit('live', { parent: this.client?.parentId ?? null, depth: this.client?.depth ?? 0 });
    } else if (state === 'reconnecting') {
      this._emit('reconnecting', { reason });
    } else if (state === 'offline' || state === 'ended') {
      this._emit('offline', { reason, ended: state === 'ended' });
    }
  }

  /** @param {PlayerState} state @param {string} [title] @param {string} [detail] */
  _show(state, title, detail = '') {
    this._state = state;
    const [badge, defaultTitle] = LABELS[state];
    this._player.dataset.state = state;
    this._ui.badge.textContent = badge;
    this._ui.title.textContent = title ?? defaultTitle;
    this._ui.detail.textContent = detail;
  }

  /** @param {Snapshot} s */
  _renderStats(s) {
    const ui = this._ui;
    if (ui.panel.hidden) return;
    ui.latency.textContent = formatMs(s.latencyMs);
    ui.bitrate.textContent = formatBitrate(s.bitrateKbps);
    ui.depth.textContent = s.parent ? String(s.depth) : '—';
    const w = s.videoWidth || this.video.videoWidth;
    const h = s.videoHeight || this.video.videoHeight;
    ui.res.textContent = w && h ? `${w}×${h}` : '—';
    const n = this.client ? [...this.client.children.values()].filter((c) => c.connected).length : s.children;
    ui.relay.textContent = relayLabel(n, s.capacity);
    ui.relay.classList.toggle('relay-on', n > 0);
    ui.mode.textContent = this.private ? 'none' : s.relayMode; // 'pass-through' (encoded frames as received) or 're-encode'
    ui.privacy.textContent = this.private ? 'private' : 'direct';
    ui.signed.textContent = signedLabel(s);
    ui.signed.dataset.verification = s.verification;
    ui.signed.title = s.unverifiedWhy ? `Frames play unchecked: ${s.unverifiedWhy}` : "Whether each frame carries the source's signature, checked before it is played";
  }

  /** @param {string} type @param {object} detail */
  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }
}

/**
 * The stats panel's word on signed frames: "verified N" (frames played after
 * their signature verified), "unverified", or "tampered" (a parent sent a
 * frame that failed; it was not played).
 * @param {Snapshot} s
 * @returns {string}
 */
export function signedLabel(s) {
  if (s.verification === 'tampered') return `tampered (${s.framesRejected} rejected)`;
  if (s.verification === 'verified') return `verified ${s.framesVerified}`;
  return 'unverified';
}

/** Remembers the viewer's relay choice for the next visit. @param {boolean} on */
export function rememberRelayChoice(on) {
  try {
    localStorage.setItem(RELAY_STORAGE_KEY, on ? '1' : '0');
  } catch {
    // storage blocked: the choice lasts for this page only
  }
}

if (!customElements.get('canopy-player')) customElements.define('canopy-player', CanopyPlayer);

/**
 * The origins of a server attribute: one address or several separated by
 * commas, each relative to the page; joined by commas as CanopyClient takes
 * them. Throws on a bad address or none.
 * @param {string} attr
 * @returns {string}
 */
export function serverOrigins(attr) {
  const out = attr.split(',').map((s) => s.trim()).filter((s) => s).map((s) => new URL(s, location.href).origin);
  if (!out.length) throw new Error('no server address');
  return out.join(',');
}
