// Tests of the decoder check (static/js/codecs.js).
// Run with: node --test static/test/

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { offeredVideoCodecs, undecodable } from '../js/codecs.js';

// What a Go parent offers for an H264 stream: one video codec, RTX, Opus.
const goOffer = [
  'v=0', 'o=- 1 2 IN IP4 127.0.0.1', 's=-', 't=0 0', 'a=group:BUNDLE 0 1',
  'm=video 9 UDP/TLS/RTP/SAVPF 102 103', 'c=IN IP4 0.0.0.0', 'a=mid:0', 'a=sendonly',
  'a=rtpmap:102 H264/90000', 'a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f',
  'a=rtpmap:103 rtx/90000', 'a=fmtp:103 apt=102',
  'm=audio 9 UDP/TLS/RTP/SAVPF 111', 'c=IN IP4 0.0.0.0', 'a=mid:1', 'a=sendonly',
  'a=rtpmap:111 opus/48000/2', '',
].join('\r\n');

// Firefox 153 ESR without the OpenH264 plugin, as measured here.
const firefoxNoH264 = ['video/VP8', 'video/rtx', 'video/VP9', 'video/AV1', 'video/ulpfec', 'video/red'].map((mimeType) => ({ mimeType }));

test('offeredVideoCodecs lists the media codecs of the video sections only', () => {
  assert.deepEqual(offeredVideoCodecs(goOffer), ['video/H264']);
  const browser = goOffer.replace('a=rtpmap:103 rtx/90000', 'a=rtpmap:103 rtx/90000\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 red/90000');
  assert.deepEqual(offeredVideoCodecs(browser), ['video/H264', 'video/VP8']);
});

test('offeredVideoCodecs skips rejected sections and takes LF line ends', () => {
  assert.deepEqual(offeredVideoCodecs(goOffer.replace('m=video 9', 'm=video 0')), []);
  assert.deepEqual(offeredVideoCodecs(goOffer.replaceAll('\r\n', '\n')), ['video/H264']);
  assert.deepEqual(offeredVideoCodecs(''), []);
});

test('undecodable names the codec only when none offered can be decoded', () => {
  assert.equal(undecodable(['video/H264'], firefoxNoH264), 'H264');
  assert.equal(undecodable(['video/h264', 'video/VP8'], firefoxNoH264), '');
  assert.equal(undecodable(['video/VP8'], firefoxNoH264), '');
  assert.equal(undecodable(['video/H264'], [{ mimeType: 'video/H264' }, { mimeType: 'video/VP8' }]), '');
});

test('undecodable assumes it can when there is nothing to judge', () => {
  assert.equal(undecodable([], firefoxNoH264), '');
  assert.equal(undecodable(['video/H264'], null), '');
  assert.equal(undecodable(['video/H264'], undefined), '');
});
