// Pure-logic tests of the pass-through relay: payload-type alignment of a
// child's offer, per-child timestamp continuity, keyframe request merging.
// Run with: node --test static/test/

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { alignPayloadTypes, preferencesFor, sameCodec, upstreamCodec } from '../js/relay-sdp.js';
import { KEYFRAME_REQUEST_GAP_MS, KeyframeRequests, SAME_TIMELINE_S, Timeline } from '../js/relay-frames.js';

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
  assert.equal(tl.map(1, 0xffffff80, false, 30), null, 'before the wrap is earlier');
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
