import { test } from 'node:test';
import assert from 'node:assert/strict';

import { linkOf, newLinkId, ofLink, reoffered, sameLink, setLink, stamped } from '../js/link.js';
import { decode } from '../js/protocol.js';

// A stand-in for an RTCPeerConnection: link.js reads only remoteDescription.
/** @returns {any} */
const fakePC = (remote = false) => ({ remoteDescription: remote ? { type: 'offer', sdp: 'v=0' } : null });

test('a link id is a nonzero 32-bit integer, and each connection its own', () => {
  const ids = new Set();
  for (let i = 0; i < 1000; i++) {
    const id = newLinkId();
    assert.ok(Number.isInteger(id) && id > 0 && id <= 0xffffffff);
    ids.add(id);
  }
  assert.ok(ids.size > 990);
});

test('a signal of another link is not the connection\'s; one naming none, or on a connection with none yet, is', () => {
  assert.ok(sameLink(0, 5) && sameLink(5, 0) && sameLink(5, undefined) && sameLink(5, 5));
  assert.ok(!sameLink(5, 6));
  const pc = fakePC();
  assert.equal(linkOf(pc), 0);
  assert.ok(ofLink(pc, { kind: 'candidate', link: 7 }));
  setLink(pc, 7);
  assert.ok(ofLink(pc, { kind: 'candidate', link: 7 }));
  assert.ok(!ofLink(pc, { kind: 'answer', link: 8, sdp: 'v=0' }));
  assert.deepEqual(stamped(pc, { kind: 'answer', sdp: 'v=0' }), { kind: 'answer', sdp: 'v=0', link: 7 });
  assert.deepEqual(stamped(fakePC(), { kind: 'answer', sdp: 'v=0' }), { kind: 'answer', sdp: 'v=0' });
});

test('an offer of another link on a connection that applied one is a new connection\'s', () => {
  const fresh = fakePC();
  setLink(fresh, 3);
  assert.ok(!reoffered(fresh, { kind: 'offer', sdp: 'v=0', link: 4 }), 'no offer applied yet');
  const pc = fakePC(true);
  setLink(pc, 3);
  assert.ok(!reoffered(pc, { kind: 'offer', sdp: 'v=0', link: 3 }), 'the same offer again');
  assert.ok(reoffered(pc, { kind: 'offer', sdp: 'v=0', link: 4 }));
  assert.ok(reoffered(pc, { kind: 'offer', sdp: 'v=0' }), 'a parent that names no links');
  assert.ok(!reoffered(pc, { kind: 'candidate', link: 4, candidate: { candidate: '' } }));
});

test('a signal\'s link is a 32-bit unsigned integer or absent', () => {
  assert.equal(decode('{"type":"signal","peer":"p","signal":{"kind":"answer","sdp":"v=0","link":4294967295}}').signal?.link, 4294967295);
  assert.equal(decode('{"type":"signal","peer":"p","signal":{"kind":"offer","sdp":"v=0"}}').signal?.link, undefined);
  for (const link of ['-1', '4294967296', '1.5', '"7"']) {
    assert.throws(() => decode(`{"type":"signal","peer":"p","signal":{"kind":"candidate","candidate":{"candidate":""},"link":${link}}}`), /link/);
  }
});
