/**
 * The build-time codecs (pbjs static code) must agree with what
 * @grpc/proto-loader makes of proto/supernode.proto at run time: the same
 * methods, the same bytes on the wire, the same objects out.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { OBJECT_OPTIONS, PROTO_PATH, supernodeService } from '../../src/common/proto';

function loaderService(): grpc.ServiceDefinition {
  const def = protoLoader.loadSync(PROTO_PATH, { keepCase: false, ...OBJECT_OPTIONS });
  const pkg = (grpc.loadPackageDefinition(def).dragonfly as grpc.GrpcObject).v1 as grpc.GrpcObject;
  return (pkg.Supernode as grpc.ServiceClientConstructor).service;
}

/** Sample requests and responses per method, including edge values. */
const samples: Record<string, { req: object[]; res: object[] }> = {
  Register: {
    req: [
      {},
      {
        url: 'https://example.com/a?b=c', headers: { Authorization: 'x', 'X-Y': 'z' }, filter: ['sig', 'exp'],
        identifier: 'sha256:' + 'a'.repeat(64), expectedDigest: 'sha256:' + 'b'.repeat(64), peerId: 'host-1-abcd',
        peerIp: '10.0.0.7', peerPort: 0, hostname: 'host',
      },
      { url: 'http://h/f', peerId: 'p', peerIp: '::1', peerPort: 65535 },
    ],
    res: [
      {},
      { taskId: 'c'.repeat(64), contentLength: 3 * 1024 ** 4, pieceSize: 4 * 1024 * 1024, pieceCount: 786432, sourceComplete: true },
      { taskId: 'd'.repeat(64), contentLength: -1, pieceSize: 262144, pieceCount: -1 },
    ],
  },
  Pieces: {
    req: [
      { hello: { taskId: 'e'.repeat(64), peerId: 'p', have: [0, 5, 1023] } },
      { hello: { taskId: 'e'.repeat(64), peerId: 'p' } },
      { result: { piece: 7, holderId: 'supernode', success: true, errorCode: '', costMs: 120 } },
      { result: { piece: 0, holderId: 'peer-2', success: false, errorCode: 'DF_ERR_PIECE_DIGEST_MISMATCH' } },
      { serving: { peerPort: 40123 } },
    ],
    res: [
      { assignment: { piece: { number: 3, offset: 3 * 262144, length: 262144, sha256: 'f'.repeat(64) }, holderId: 'peer-1', holderAddr: '[::1]:4000' } },
      { assignment: { piece: { number: 9000, offset: 2 ** 40, length: 1, sha256: '0'.repeat(64) }, holderId: 'supernode', holderAddr: '10.0.0.1:8001' } },
      { update: { contentLength: 67108864, pieceCount: 256, sourceComplete: true, errorCode: '', errorMessage: '' } },
      { update: { contentLength: -1, pieceCount: -1, errorCode: 'DF_ERR_SOURCE_STATUS', errorMessage: 'source answered 500' } },
    ],
  },
  Leave: { req: [{}, { peerId: 'p', taskId: 'a'.repeat(64) }], res: [{}] },
};

test('the static service has the methods, paths and streaming of the .proto', () => {
  const ours = supernodeService();
  const theirs = loaderService();
  assert.deepEqual(Object.keys(ours).sort(), Object.keys(theirs).sort());
  for (const name of Object.keys(theirs)) {
    assert.equal(ours[name].path, theirs[name].path, name);
    assert.equal(ours[name].requestStream, theirs[name].requestStream, name);
    assert.equal(ours[name].responseStream, theirs[name].responseStream, name);
    assert.equal(ours[name].originalName, theirs[name].originalName, name);
  }
  assert.deepEqual(Object.keys(samples).sort(), Object.keys(theirs).sort(), 'every method has samples');
});

test('the static codecs write the bytes proto-loader writes and read the objects it reads', () => {
  const ours = supernodeService();
  const theirs = loaderService();
  for (const [name, s] of Object.entries(samples)) {
    const pairs: Array<[object[], 'request' | 'response']> = [[s.req, 'request'], [s.res, 'response']];
    for (const [objs, dir] of pairs) {
      const ser = dir === 'request' ? 'requestSerialize' : 'responseSerialize';
      const de = dir === 'request' ? 'requestDeserialize' : 'responseDeserialize';
      for (const o of objs) {
        const a = ours[name][ser](o);
        const b = theirs[name][ser](o);
        assert.deepEqual(Buffer.from(a), Buffer.from(b), `${name} ${dir} bytes of ${JSON.stringify(o)}`);
        assert.deepEqual(ours[name][de](b), theirs[name][de](b), `${name} ${dir} object of ${JSON.stringify(o)}`);
      }
    }
  }
});

test('a malformed message is refused by the static decoder, as by proto-loader', () => {
  const ours = supernodeService();
  const theirs = loaderService();
  const junk = Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]);
  assert.throws(() => ours.Pieces.requestDeserialize(junk));
  assert.throws(() => theirs.Pieces.requestDeserialize(junk));
});
