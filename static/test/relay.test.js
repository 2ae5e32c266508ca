// Pure-logic tests of the pass-through relay: payload-type alignment of a
// child's offer, per-child timestamp continuity, keyframe request merging.
// Run with: node --test static/test/

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { alignPayloadTypes, preferencesFor, sameCodec, upstreamCodec } from '../js/relay-sdp.js';
import { BURST_SPEEDUP, FRESH_GOP_MS, KEYFRAME_REQUEST_GAP_MS, KeyframeRequests, SAME_TIMELINE_S, Timeline, burstOver, burstTimestamps, freshGop } from '../js/relay-frames.js';

// An offer as Chromium makes it for a child link narrowed to H264 and Opus.
const offer = [
  'v=0', 'o=- 1 2 IN IP4 127.0.0.1', 's=-', 't=0 0', 'a=group:BUNDLE 0 1',
  'm=video 9 UDP/TLS/RTP/SAVPF 103 104', 'c=IN IP4 0.0.0.0', 'a=mid:0', 'a=sendonly',
  'a=rtpmap:103 H264/90000', 'a=rtcp-fb:103 nack', 'a=rtcp-fb:103 nack pli',
  'a=fmtp:103 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f',
  'a=rtpmap:104 rtx/90000', 'a=fmtp:104 apt=103',
  'm=audio 9 UDP/TLS/RTP/SAVPF 111', 'c=IN IP4 0.0.0.0', 'a=mid:1', 'a=sendonly',
  'a=rtpmap:111 opus/48000/2', 'a=fmtp:111 minptime=10;useinbandfec=1', '',
].join('\r\n');

const goH264 = { kind: 'video', mimeType: 'video/H264', clockRate: 90000, payloadType: 102, sdpFmtpLine: 'level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f' };
const goOpus = { kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: 111 };

test('alignPayloadTypes gives the child link the upstream numbers', () => {
  const { sdp, missing } = alignPayloadTypes(offer, [goH264, goOpus]);
  assert.deepEqual(missing, []);
  const lines = sdp.split('\r\n');
  assert.ok(lines.includes('m=video 9 UDP/TLS/RTP/SAVPF 102 104'), sdp);
  assert.ok(lines.includes('a=rtpmap:102 H264/90000'));
  assert.ok(lines.includes('a=rtcp-fb:102 nack pli'));
  assert.ok(lines.includes('a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f'));
  assert.ok(lines.includes('a=fmtp:104 apt=102'), 'RTX follows its codec');
  assert.ok(lines.includes('m=audio 9 UDP/TLS/RTP/SAVPF 111'));
  assert.equal(sdp.endsWith('\r\n'), true);
});

test('alignPayloadTypes swaps with a number already taken, everywhere', () => {
  // The upstream sends H264 as 111, which this offer uses for Opus: the two
  // swap in both m-sections, so the bundle still maps each number once.
  const { sdp, missing } = alignPayloadTypes(offer, [{ ...goH264, payloadType: 111 }]);
  assert.deepEqual(missing, []);
  assert.match(sdp, /m=video 9 UDP\/TLS\/RTP\/SAVPF 111 104/);
  assert.match(sdp, /a=rtpmap:111 H264\/90000/);
  assert.match(sdp, /m=audio 9 UDP\/TLS\/RTP\/SAVPF 103\r\n/);
  assert.match(sdp, /a=rtpmap:103 opus\/48000\/2/);
  assert.match(sdp, /a=fmtp:104 apt=111/);
});

test('alignPayloadTypes reports a codec the offer lacks and leaves the SDP alone', () => {
  const vp8 = { kind: 'video', mimeType: 'video/VP8', clockRate: 90000, payloadType: 96 };
  const { sdp, missing } = alignPayloadTypes(offer, [vp8]);
  assert.equal(sdp, offer);
  assert.deepEqual(missing, ['video video/VP8/96']);
  // Another H264 profile is another codec.
  const high = { ...goH264, sdpFmtpLine: 'packetization-mode=1;profile-level-id=64001f' };
  assert.equal(alignPayloadTypes(offer, [high]).missing.length, 1);
});

test('upstreamCodec and preferencesFor pick the media codec and its RTX', () => {
  const negotiated = [
    { mimeType: 'video/rtx', clockRate: 90000, payloadType: 103, sdpFmtpLine: 'apt=102' },
    { mimeType: 'video/H264', clockRate: 90000, payloadType: 102, sdpFmtpLine: goH264.sdpFmtpLine },
  ];
  const up = upstreamCodec(negotiated);
  assert.deepEqual(up, { mimeType: 'video/H264', clockRate: 90000, payloadType: 102, sdpFmtpLine: goH264.sdpFmtpLine });
  assert.equal(upstreamCodec([{ mimeType: 'video/rtx', clockRate: 90000, payloadType: 97 }]), null);
  const caps = [
    { mimeType: 'video/VP8', clockRate: 90000 },
    { mimeType: 'video/rtx', clockRate: 90000 },
    { mimeType: 'video/H264', clockRate: 90000, sdpFmtpLine: 'level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f' },
    { mimeType: 'video/H264', clockRate: 90000, sdpFmtpLine: 'level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f' },
    { mimeType: 'video/red', clockRate: 90000 },
  ];
  assert.deepEqual(preferencesFor(caps, /** @type {any} */ (up)), [caps[3], caps[1]]);
  assert.deepEqual(preferencesFor([{ mimeType: 'audio/opus', clockRate: 48000 }, { mimeType: 'audio/red', clockRate: 48000 }], goOpus), [{ mimeType: 'audio/opus', clockRate: 48000 }]);
  assert.equal(preferencesFor(caps, { mimeType: 'video/AV1', clockRate: 90000, payloadType: 45 }), null);
  assert.ok(sameCodec({ mimeType: 'video/vp8' }, { mimeType: 'video/VP8', clockRate: 90000 }));
});

test('Timeline starts a video child at a keyframe and keeps timestamps increasing', () => {
  const tl = new Timeline(90000, true);
  assert.equal(tl.map(1, 1000, false, 0), null, 'a delta before any keyframe is held back');
  assert.equal(tl.map(1, 4000, true, 33), 4000);
  assert.equal(tl.map(1, 7000, false, 66), 7000);
  assert.equal(tl.map(1, 7000, false, 70), null, 'a repeat is not sent twice');
  const audio = new Timeline(48000, false);
  assert.equal(audio.map(1, 960, false, 0), 960, 'audio needs no keyframe');
});

test('Timeline: a new parent on the same timeline continues without repeats', () => {
  const tl = new Timeline(90000, true);
  tl.map(1, 10_000, true, 0);
  tl.map(1, 13_000, false, 33);
  tl.map(1, 16_000, false, 66);
  // The new parent starts with its GOP burst: a keyframe from 1 s back, then
  // the frames up to now. Only what the child has not had goes out, unchanged.
  assert.equal(tl.map(2, 16_000 - 90_000, true, 80), null);
  assert.equal(tl.map(2, 16_000, false, 81), null);
  assert.equal(tl.map(2, 19_000, false, 100), 19_000);
  assert.equal(tl.offset, 0);
});

test('Timeline: another timeline is re-based after the last sent frame, from a keyframe', () => {
  const tl = new Timeline(90000, true);
  tl.map(1, 10_000, true, 0);
  tl.map(1, 13_000, false, 33);
  const far = 13_000 + (SAME_TIMELINE_S + 5) * 90000;
  assert.equal(tl.map(2, far, false, 50), null, 'the new timeline starts at a keyframe');
  assert.equal(tl.waitKey, true);
  const t = tl.map(2, far + 3000, true, 533); // 500 ms after the last frame sent
  assert.equal(t, 13_000 + 45_000);
  assert.equal(tl.map(2, far + 6000, false, 566), 13_000 + 48_000);
});

test('Timeline wraps around 2^32', () => {
  const tl = new Timeline(48000, false);
  assert.equal(tl.map(1, 0xffffff00, false, 0), 0xffffff00);
  assert.equal(tl.map(1, 0x000002c0, false, 20), 0x2c0, 'past the wrap is later, not earlier');
  assert.equal(tl.map(1, 0xffffff00, false, 30), null, 'before the wrap is earlier: a repeat');
});

test('Timeline: a late frame of the playing parent goes out once; a repeat or an old one does not', () => {
  const tl = new Timeline(90000, true);
  tl.map(1, 10_000, true, 0);
  // 13 000 and 16 000 were lost; 19 000 came, then the repairs.
  assert.equal(tl.map(1, 19_000, false, 100), 19_000);
  assert.equal(tl.map(1, 13_000, false, 110), 13_000, 'late, not sent: it goes, with its timestamp');
  assert.equal(tl.map(1, 16_000, false, 111), 16_000);
  assert.equal(tl.last, 19_000, 'the timeline goes on from the newest');
  assert.equal(tl.map(1, 13_000, false, 112), null, 'sent already');
  assert.equal(tl.map(1, 22_000, false, 133), 22_000);
  assert.equal(tl.map(1, 22_000 - 90_000 - 3000, false, 140), null, 'older than LATE_S');
  assert.equal(tl.map(1, 5_000, false, 141), null, 'before this parent\'s first frame');
  // After a parent switch on the same timeline, what the new parent repeats
  // is not late: nothing goes out before its first fresh frame.
  assert.equal(tl.map(2, 20_500, false, 150), null);
  assert.equal(tl.map(2, 25_000, false, 166), 25_000);
  assert.equal(tl.map(2, 20_500, false, 167), null, 'before the new parent\'s first frame sent');
});

test('burstTimestamps replays a GOP faster than made, spaced by bytes, ending at the newest', () => {
  const sizes = [20000, 1000, 1000, 1000, 1000, 1000];
  const ts = burstTimestamps(1_000_000, sizes, 3000);
  assert.equal(ts.length, sizes.length);
  assert.equal(ts[ts.length - 1], 1_000_000);
  for (let i = 1; i < ts.length; i++) assert.ok(ts[i] - ts[i - 1] >= 90, `frame ${i} at least 1 ms after the one before`);
  // The span is the GOP's duration divided by the speed-up, within rounding.
  assert.ok(Math.abs(ts[ts.length - 1] - ts[0] - (5 * 3000) / BURST_SPEEDUP) <= 5);
  // The keyframe takes the larger share: it is 20 times a delta's bytes.
  assert.ok(ts[1] - ts[0] > 10 * (ts[2] - ts[1]));
  // A GOP of one frame, and timestamps wrapping around 2^32.
  assert.deepEqual(burstTimestamps(7, [5000], 3000), [7]);
  const w = burstTimestamps(100, [1000, 1000, 1000], 3000);
  assert.equal(w[0], (100 - 3000) >>> 0);
  assert.equal(((w[1] - w[0]) | 0) > 0, true);
});

test('a promoted child starts from the GOP at once only if it is the playing parent\'s and fresh', () => {
  const s = { gopUp: 3, active: 3, frames: 40, lastVideoAt: 1000, now: 1000 + FRESH_GOP_MS };
  assert.equal(freshGop(s), true);
  assert.equal(freshGop({ ...s, now: 1001 + FRESH_GOP_MS }), false, 'its parent fell silent: it may be dead');
  assert.equal(freshGop({ ...s, active: 4 }), false, 'this tab switched parent: the GOP is the old one\'s');
  assert.equal(freshGop({ ...s, frames: 0 }), false);
});

test('burstOver: a frame 10 ms or more after the one before ends a burst', () => {
  assert.equal(burstOver([1000]), false, 'a keyframe alone: its burst may follow');
  assert.equal(burstOver([1000, 1090]), false, '1 ms apart: inside a Go parent\'s burst');
  assert.equal(burstOver([1000, 4000]), true, 'a live frame at 30 fps');
  assert.equal(burstOver([0xffffff00, 3000]), true, 'across the wrap');
});

test('KeyframeRequests merges a burst into one request per gap', () => {
  let now = 0;
  /** @type {Array<() => void>} */
  const timers = [];
  let sent = 0;
  const k = new KeyframeRequests(() => { sent++; }, { now: () => now, schedule: (fn) => { timers.push(fn); } });
  k.request();
  assert.equal(sent, 1, 'the first goes at once');
  now = 100;
  k.request();
  k.request();
  k.request();
  assert.equal(sent, 1);
  assert.equal(timers.length, 1, 'one deferred request for the burst');
  now = KEYFRAME_REQUEST_GAP_MS;
  timers.shift()?.();
  assert.equal(sent, 2);
  assert.equal(k.merged, 2);
  now = 2 * KEYFRAME_REQUEST_GAP_MS + 1;
  k.request();
  assert.equal(sent, 3, 'after a quiet gap, at once again');
});

test('pass-through offers drop the dependency descriptor, and nothing else', async () => {
  const { withoutDependencyDescriptor, DEPENDENCY_DESCRIPTOR_URI } = await import('../js/relay-sdp.js');
  const sdp = ['m=video 9 UDP/TLS/RTP/SAVPF 96', 'a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid',
    `a=extmap:11 ${DEPENDENCY_DESCRIPTOR_URI}`, 'a=rtpmap:96 VP8/90000', ''].join('\r\n');
  const out = withoutDependencyDescriptor(sdp);
  assert.ok(!out.includes(DEPENDENCY_DESCRIPTOR_URI));
  assert.equal(out, sdp.replace(`a=extmap:11 ${DEPENDENCY_DESCRIPTOR_URI}\r\n`, ''));
});

test('pass-through answers get a start and floor for the sending estimate on VP8-like video codecs only', async () => {
  const { withSendBitrates } = await import('../js/relay-sdp.js');
  const sdp = ['v=0', 'm=audio 9 UDP/TLS/RTP/SAVPF 111', 'a=rtpmap:111 opus/48000/2', 'a=fmtp:111 minptime=10;useinbandfec=1',
    'm=video 9 UDP/TLS/RTP/SAVPF 96 97 102', 'a=rtpmap:96 VP8/90000', 'a=rtpmap:97 rtx/90000', 'a=fmtp:97 apt=96',
    'a=rtpmap:102 H264/90000', 'a=fmtp:102 profile-level-id=42e01f;packetization-mode=1', ''].join('\r\n');
  const out = withSendBitrates(sdp, 4000, 1500).split('\r\n');
  const p = 'x-google-start-bitrate=4000;x-google-min-bitrate=1500';
  assert.ok(out.includes('a=fmtp:111 minptime=10;useinbandfec=1'), 'audio untouched');
  assert.equal(out[out.indexOf('a=rtpmap:96 VP8/90000') + 1], `a=fmtp:96 ${p}`, 'VP8 had no fmtp: one is added');
  assert.ok(out.includes('a=fmtp:97 apt=96'), 'RTX untouched');
  assert.ok(out.includes('a=fmtp:102 profile-level-id=42e01f;packetization-mode=1'), 'H264 fmtp untouched');
  assert.ok(!out.some((l) => l.startsWith('a=fmtp:102 x-google')), 'no second fmtp line for H264');
  assert.equal(withSendBitrates(withSendBitrates(sdp)), withSendBitrates(sdp), 'idempotent');
});

test('a re-encoding standby link sends no track until promoted, then the tab\'s', async () => {
  // A stand-in RTCPeerConnection that records what the link does with it.
  class FakeSender {
    constructor(track) { this.track = track ?? null; this.replaced = []; }
    async replaceTrack(t) { this.replaced.push(t); this.track = t; }
  }
  class FakePC {
    constructor() { this.transceivers = []; this.connectionState = 'new'; this.iceConnectionState = 'new'; }
    addTransceiver(trackOrKind) {
      const track = typeof trackOrKind === 'string' ? null : trackOrKind;
      const tr = { sender: new FakeSender(track), setCodecPreferences() {} };
      this.transceivers.push({ trackOrKind, tr });
      return tr;
    }
    async createOffer() { return { type: 'offer', sdp: 'v=0\r\n' }; }
    async setLocalDescription(d) { this.localDescription = d; }
    close() {}
  }
  class FakeStream { constructor() { this.tracks = []; } addTrack(t) { this.tracks.push(t); } }
  const saved = { pc: globalThis.RTCPeerConnection, ms: globalThis.MediaStream };
  globalThis.RTCPeerConnection = /** @type {any} */ (FakePC);
  globalThis.MediaStream = /** @type {any} */ (FakeStream);
  try {
    const { ChildLink } = await import('../js/relay.js');
    const video = { kind: 'video', id: 'v1' };
    const audio = { kind: 'audio', id: 'a1' };
    const sent = [];
    const link = new ChildLink(/** @type {any} */ ({
      peer: 'child', iceServers: [], kinds: ['video', 'audio'], tracks: new Map([['video', video], ['audio', audio]]),
      send: (s) => sent.push(s), onClosed() {}, standby: true,
    }));
    link.start();
    const pc = /** @type {any} */ (link.pc);
    assert.deepEqual(pc.transceivers.map((x) => x.trackOrKind), ['video', 'audio'], 'idle: transceivers by kind, no track');
    link.setTrack(/** @type {any} */ ({ kind: 'video', id: 'v2' }));
    assert.equal(link.senders.get('video').track, null, 'a new track of the tab does not start an idle link');
    const live = { kind: 'video', id: 'v3' };
    link.promote(new Map([['video', live], ['audio', audio]]));
    await Promise.resolve();
    assert.equal(link.senders.get('video').track, live, 'promoted: the tab\'s video');
    assert.equal(link.senders.get('audio').track, audio, 'promoted: the tab\'s audio');
    await link._chain;
    assert.equal(sent[0]?.kind, 'offer', 'negotiated like a child link');
    // An ordinary (not standby) re-encoding link sends the tab's tracks at once.
    const child = new ChildLink(/** @type {any} */ ({
      peer: 'c2', iceServers: [], kinds: ['video'], tracks: new Map([['video', video]]), send() {}, onClosed() {},
    }));
    child.start();
    assert.equal(/** @type {any} */ (child.pc).transceivers[0].trackOrKind, video);
  } finally {
    globalThis.RTCPeerConnection = saved.pc;
    globalThis.MediaStream = saved.ms;
  }
});
