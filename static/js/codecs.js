// Whether this browser can decode a stream's video at all. Nothing in a
// Canopy tree converts codecs on purpose: Go relays and pass-through
// browsers forward the source's codec, so a browser without a decoder for
// it would answer with its video rejected and wait forever. Firefox builds
// without the OpenH264 plugin (firefox-esr on a machine that cannot fetch
// it) decode VP8, VP9 and AV1 but no H264. Pure functions: node --test
// runs them.

/** MIME subtypes that are not media codecs (repair, redundancy, comfort noise). */
const NOT_MEDIA = new Set(['rtx', 'red', 'ulpfec', 'flexfec-03', 'cn', 'telephone-event']);

/**
 * The media codecs an SDP offers for video, as MIME types ('video/H264'),
 * from every video section that is not rejected (port 0). Pure.
 * @param {string} sdp
 * @returns {string[]}
 */
export function offeredVideoCodecs(sdp) {
  /** @type {string[]} */
  const out = [];
  let video = false;
  for (const line of sdp.split(/\r?\n/)) {
    if (line.startsWith('m=')) {
      const [media, port] = line.slice(2).split(' ');
      video = media === 'video' && port !== '0';
      continue;
    }
    const m = video && /^a=rtpmap:\d+ ([^/\s]+)\//.exec(line);
    if (m && !NOT_MEDIA.has(m[1].toLowerCase())) out.push(`video/${m[1]}`);
  }
  return out;
}

/**
 * The first of the codecs offered that this browser cannot decode, when it
 * can decode none of them; '' when it can decode one, when none is
 * offered, or when the browser does not say what it decodes. Pure.
 * @param {string[]} offered MIME types, e.g. ['video/H264']
 * @param {ReadonlyArray<{mimeType: string}>|null|undefined} capabilities RTCRtpReceiver.getCapabilities('video')?.codecs
 * @returns {string} e.g. 'H264'
 */
export function undecodable(offered, capabilities) {
  if (!capabilities || offered.length === 0) return '';
  const have = new Set(capabilities.map((c) => c.mimeType.toLowerCase()));
  if (offered.some((m) => have.has(m.toLowerCase()))) return '';
  return offered[0].split('/')[1] ?? offered[0];
}

/**
 * undecodable for this browser's own receivers.
 * @param {string[]} offered
 * @returns {string}
 */
export function cannotDecode(offered) {
  return undecodable(offered, globalThis.RTCRtpReceiver?.getCapabilities?.('video')?.codecs);
}
