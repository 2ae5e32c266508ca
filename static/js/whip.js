// A WHIP client (RFC 9725) for the browser publish page: it offers the
// page's camera, microphone or screen to POST /whip/<stream>, trickles late
// ICE candidates with PATCH, and ends the session with DELETE. The parsing
// helpers are pure, so node --test covers them.

/**
 * One ICE server from a WHIP response's Link headers.
 * @typedef {{urls: string[], username?: string, credential?: string}} LinkICEServer
 */

/**
 * Parses the ICE servers out of Link header values (RFC 9725 §4.6):
 * `<turn:host:3478?transport=udp>; rel="ice-server"; username="u";
 * credential="c"; credential-type="password"`, possibly several in one
 * header, comma-separated. Entries with another rel are ignored.
 * @param {string|null} header the Link header (fetch joins repeats with ", ")
 * @returns {LinkICEServer[]}
 */
export function parseLinkICEServers(header) {
  if (!header) return [];
  /** @type {LinkICEServer[]} */
  const out = [];
  // A comma splits links except inside <…> or "…".
  const links = [];
  let cur = '';
  let inURL = false;
  let inQuote = false;
  for (const ch of header) {
    if (ch === '<' && !inQuote) inURL = true;
    else if (ch === '>' && !inQuote) inURL = false;
    else if (ch === '"' && !inURL) inQuote = !inQuote;
    if (ch === ',' && !inURL && !inQuote) {
      links.push(cur);
      cur = '';
      continue;
    }
    cur += ch;
  }
  links.push(cur);
  for (const link of links) {
    const m = /^\s*<([^>]*)>(.*)$/.exec(link);
    if (!m) continue;
    /** @type {Record<string, string>} */
    const params = {};
    // Parameters are ;-separated; a quoted value may hold ; or , itself.
    for (const kv of m[2].matchAll(/;\s*([A-Za-z-]+)\s*=\s*(?:"([^"]*)"|([^\s;]*))/g)) {
      params[kv[1].toLowerCase()] = kv[2] ?? kv[3] ?? '';
    }
    if (params.rel !== 'ice-server') continue;
    /** @type {LinkICEServer} */
    const s = { urls: [m[1]] };
    if (params.username) s.username = params.username;
    if (params.credential) s.credential = params.credential;
    out.push(s);
  }
  return out;
}

/**
 * Builds an application/trickle-ice-sdpfrag body (RFC 8840) for candidates
 * of one media section, identified by its mid and the offer's ufrag/pwd.
 * @param {{ufrag: string, pwd: string, mid: string, candidates: string[], end?: boolean}} f
 * @returns {string}
 */
export function sdpFrag({ ufrag, pwd, mid, candidates, end }) {
  const lines = [`a=ice-ufrag:${ufrag}`, `a=ice-pwd:${pwd}`, 'm=audio 9 RTP/AVP 0', `a=mid:${mid}`];
  for (const c of candidates) lines.push(c.startsWith('a=') ? c : `a=${c}`);
  if (end) lines.push('a=end-of-candidates');
  return lines.join('\r\n') + '\r\n';
}

/**
 * The session-level ICE credentials of an SDP (the first ones found).
 * @param {string} sdp
 * @returns {{ufrag: string, pwd: string}}
 */
export function iceCredentials(sdp) {
  const ufrag = /^a=ice-ufrag:(.+)$/m.exec(sdp)?.[1]?.trim() ?? '';
  const pwd = /^a=ice-pwd:(.+)$/m.exec(sdp)?.[1]?.trim() ?? '';
  return { ufrag, pwd };
}

/**
 * A WHIP error as a person should read it, from the response's status and
 * body (the server answers {"error": "…"}).
 * @param {number} status
 * @param {string} body
 * @returns {string}
 */
export function describeError(status, body) {
  let detail = '';
  try {
    const j = JSON.parse(body);
    if (j && typeof j.error === 'string') detail = j.error;
  } catch {
    detail = body.trim().slice(0, 200);
  }
  /** @type {Record<number, string>} */
  const what = {
    400: 'the server could not use this browser\'s offer',
    401: 'a publishing token is needed',
    403: 'this token may not publish this stream',
    409: 'someone is already publishing this stream',
    413: 'the offer is too large',
    415: 'the server expects application/sdp',
    422: 'no video or audio codec in common with the server',
    429: 'too many publishing sessions from this address; wait a moment',
  };
  const head = what[status] ?? `the server answered ${status}`;
  return detail && !head.includes(detail) ? `${head} (${detail})` : head;
}

/** @typedef {'idle'|'connecting'|'live'|'reconnecting'|'stopped'|'failed'} WhipState */

/**
 * A WHIP session for one MediaStream.
 */
export class WhipSession extends EventTarget {
  /**
   * @param {string} endpoint absolute or page-relative URL of /whip/<stream>
   * @param {{token?: string, codec?: string, maxBitrateKbps?: number, fetch?: typeof fetch}} [opts]
   */
  constructor(endpoint, opts = {}) {
    super();
    this.endpoint = endpoint;
    this.token = opts.token ?? '';
    this.codec = (opts.codec ?? '').toUpperCase();
    this.maxBitrateKbps = opts.maxBitrateKbps ?? 0;
    this.fetch = opts.fetch ?? globalThis.fetch.bind(globalThis);
    /** @type {WhipState} */
    this.state = 'idle';
    /** @type {RTCPeerConnection|null} */
    this.pc = null;
    /** @type {string|null} */
    this.location = null;
    /** @type {string|null} */
    this.etag = null;
    /** @type {string[]} candidates gathered after the offer was sent, before the session existed */
    this.pending = [];
    /** Candidates gathered before this are in the offer itself. */
    this.offerSent = false;
    this.lastError = '';
  }

  /** @param {WhipState} s @param {string} [detail] */
  setState(s, detail = '') {
    if (this.state === s && !detail) return;
    this.state = s;
    if (detail) this.lastError = detail;
    this.dispatchEvent(new CustomEvent('statechange', { detail: { state: s, reason: detail } }));
  }

  /** @returns {Record<string, string>} */
  authHeaders() {
    return this.token ? { Authorization: `Bearer ${this.token}` } : {};
  }

  /**
   * Offers stream to the server and resolves once the answer is applied;
   * 'live' follows when the connection is up.
   * @param {MediaStream} stream
   */
  async publish(stream) {
    if (this.pc) throw new Error('already publishing');
    this.setState('connecting');
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    this.pc = pc;
    for (const track of stream.getTracks()) {
      const tr = pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
      if (track.kind === 'video') this.preferCodec(tr);
      if (track.kind === 'video' && this.maxBitrateKbps > 0) {
        const p = tr.sender.getParameters();
        p.encodings = (p.encodings && p.encodings.length ? p.encodings : [{}]).map((e) => ({ ...e, maxBitrate: this.maxBitrateKbps * 1000 }));
        tr.sender.setParameters(p).catch(() => {});
      }
    }
    pc.addEventListener('connectionstatechange', () => {
      switch (pc.connectionState) {
        case 'connected': this.setState('live'); break;
        case 'disconnected': this.setState('reconnecting'); break;
        case 'failed': this.setState('failed', 'the connection to the server failed'); break;
      }
    });
    pc.addEventListener('icecandidate', (e) => this.trickle(e.candidate));
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    // Gather briefly so that most candidates ride in the offer (fewer
    // round trips; WHIP servers without trickle still connect), then
    // trickle whatever comes later.
    await waitGathering(pc, 700);
    const sdp = pc.localDescription?.sdp ?? offer.sdp ?? '';
    this.offerSent = true;
    const res = await this.fetch(this.endpoint, {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp', ...this.authHeaders() },
      body: sdp,
    });
    const body = await res.text();
    if (res.status !== 201) {
      this.close();
      const msg = describeError(res.status, body);
      this.setState('failed', msg);
      throw new Error(msg);
    }
    this.location = new URL(res.headers.get('Location') ?? '', new URL(this.endpoint, globalThis.location?.href)).toString();
    this.etag = res.headers.get('ETag');
    const servers = parseLinkICEServers(res.headers.get('Link'));
    if (servers.length) {
      try {
        pc.setConfiguration({ ...pc.getConfiguration(), iceServers: servers });
      } catch {
        // a browser that refuses a configuration change keeps its host candidates
      }
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
    const queued = this.pending;
    this.pending = [];
    if (queued.length) this.sendCandidates(queued, false);
  }

  /** @param {RTCRtpTransceiver} tr */
  preferCodec(tr) {
    if (!this.codec || typeof RTCRtpSender.getCapabilities !== 'function' || !tr.setCodecPreferences) return;
    const caps = RTCRtpSender.getCapabilities('video');
    if (!caps) return;
    const want = caps.codecs.filter((c) => c.mimeType.toUpperCase() === `VIDEO/${this.codec}` &&
      (this.codec !== 'H264' || /packetization-mode=1/.test(c.sdpFmtpLine ?? '')));
    if (!want.length) return;
    const rest = caps.codecs.filter((c) => !want.includes(c));
    try {
      tr.setCodecPreferences([...want, ...rest]);
    } catch {
      // keep the browser's order
    }
  }

  /** @param {RTCIceCandidate|null} c */
  trickle(c) {
    if (!this.pc || !this.offerSent) return; // before the offer went out: it carries them
    const line = c ? `a=${c.candidate}` : '';
    if (!this.location) {
      if (line) this.pending.push(line);
      return;
    }
    this.sendCandidates(line ? [line] : [], !c);
  }

  /** @param {string[]} lines @param {boolean} end */
  sendCandidates(lines, end) {
    if (!this.location || !this.pc) return;
    const sdp = this.pc.localDescription?.sdp ?? '';
    const mid = this.pc.getTransceivers()[0]?.mid ?? '0';
    const body = sdpFrag({ ...iceCredentials(sdp), mid, candidates: lines, end });
    /** @type {Record<string, string>} */
    const headers = { 'Content-Type': 'application/trickle-ice-sdpfrag', ...this.authHeaders() };
    if (this.etag) headers['If-Match'] = this.etag;
    this.fetch(this.location, { method: 'PATCH', headers, body }).catch(() => {
      // a lost trickle costs a candidate, not the session
    });
  }

  /** Ends the session: DELETE on the server, then the connection. */
  async stop() {
    const loc = this.location;
    this.location = null;
    this.close();
    if (loc) {
      try {
        // keepalive: the DELETE still goes out when the page is closing.
        await this.fetch(loc, { method: 'DELETE', headers: this.authHeaders(), keepalive: true });
      } catch {
        // the server notices the closed connection anyway
      }
    }
    this.setState('stopped');
  }

  close() {
    if (this.pc) {
      this.pc.close();
      this.pc = null;
    }
  }
}

/**
 * Resolves when ICE gathering completes or after ms, whichever is first.
 * @param {RTCPeerConnection} pc
 * @param {number} ms
 * @returns {Promise<void>}
 */
function waitGathering(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    const timer = setTimeout(done, ms);
    pc.addEventListener('icegatheringstatechange', check);
  });
}
