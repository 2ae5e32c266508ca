import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseLinkICEServers, sdpFrag, iceCredentials, describeError } from '../js/whip.js';

test('Link headers give the ICE servers, ignoring other relations', () => {
  const h = '<stun:stun.example.net:3478>; rel="ice-server", ' +
    '<turn:turn.example.net:3478?transport=udp>; rel="ice-server"; username="1700000000:p1"; credential="a,b;c"; credential-type="password", ' +
    '<https://example.net/doc>; rel="help"';
  assert.deepEqual(parseLinkICEServers(h), [
    { urls: ['stun:stun.example.net:3478'] },
    { urls: ['turn:turn.example.net:3478?transport=udp'], username: '1700000000:p1', credential: 'a,b;c' },
  ]);
  assert.deepEqual(parseLinkICEServers(null), []);
  assert.deepEqual(parseLinkICEServers('garbage'), []);
});

test('a trickle fragment names the ufrag, pwd and mid, and may end the candidates', () => {
  const body = sdpFrag({ ufrag: 'uf', pwd: 'pw', mid: '0', candidates: ['a=candidate:1 1 udp 1 127.0.0.1 5000 typ host', 'candidate:2 1 udp 1 127.0.0.1 5001 typ host'], end: true });
  assert.equal(body, 'a=ice-ufrag:uf\r\na=ice-pwd:pw\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n' +
    'a=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\na=candidate:2 1 udp 1 127.0.0.1 5001 typ host\r\na=end-of-candidates\r\n');
});

test('ICE credentials come from the first a=ice-ufrag and a=ice-pwd', () => {
  assert.deepEqual(iceCredentials('v=0\r\na=ice-ufrag:abcd\r\na=ice-pwd:secret\r\na=ice-ufrag:later\r\n'), { ufrag: 'abcd', pwd: 'secret' });
  assert.deepEqual(iceCredentials(''), { ufrag: '', pwd: '' });
});

test('errors read as sentences, with the server\'s detail', () => {
  assert.equal(describeError(409, '{"error":"stream already has a source"}'), 'someone is already publishing this stream (stream already has a source)');
  assert.equal(describeError(401, ''), 'a publishing token is needed');
  assert.equal(describeError(503, 'busy'), 'the server answered 503 (busy)');
});
