/**
 * The gRPC service of proto/supernode.proto, with the message shapes as
 * TypeScript types. The messages are encoded by code protobufjs's pbjs
 * generates from the .proto at build time (dist/src/common/supernode-pb.js):
 * a process that speaks to the supernode loads no .proto parser and compiles
 * no codecs at run time. Objects come out as @grpc/proto-loader gives them
 * (camelCase names, defaults filled in, a `kind` naming the oneof member set,
 * int64 as JS numbers: lengths stay far below 2^53); a unit test holds the
 * two to the same bytes and objects.
 */
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';

export interface RegisterRequest {
  url: string;
  headers: Record<string, string>;
  filter: string[];
  identifier: string;
  expectedDigest: string;
  peerId: string;
  peerIp: string;
  peerPort: number;
  hostname: string;
}
export interface PieceInfo { number: number; offset: number; length: number; sha256: string }
export interface RegisterResponse {
  taskId: string;
  contentLength: number;
  pieceSize: number;
  pieceCount: number;
  sourceComplete: boolean;
}
export interface Hello { taskId: string; peerId: string; have: number[] }
export interface PieceResult { piece: number; holderId: string; success: boolean; errorCode: string; costMs: number }
export interface Serving { peerPort: number }
export interface PeerMessage { hello?: Hello; result?: PieceResult; serving?: Serving; kind?: 'hello' | 'result' | 'serving' }
export interface PieceAssignment { piece: PieceInfo; holderId: string; holderAddr: string }
export interface TaskUpdate {
  contentLength: number;
  pieceCount: number;
  sourceComplete: boolean;
  errorCode: string;
  errorMessage: string;
}
export interface SupernodeMessage { assignment?: PieceAssignment; update?: TaskUpdate; kind?: 'assignment' | 'update' }
export interface LeaveRequest { peerId: string; taskId: string }

export const PROTO_PATH = path.resolve(__dirname, '..', '..', '..', 'proto', 'supernode.proto');

/** What pbjs generates per message type (static-module, commonjs). */
interface StaticType {
  fromObject(o: object): object;
  encode(m: object): { finish(): Uint8Array };
  decode(b: Uint8Array): object;
  toObject(m: object, opts: object): object;
}

/** The conversion @grpc/proto-loader is asked for, applied to decoded messages. */
export const OBJECT_OPTIONS = { longs: Number, enums: String, defaults: true, arrays: true, objects: true, oneofs: true };

let service: grpc.ServiceDefinition | undefined;
let clientCtor: grpc.ServiceClientConstructor | undefined;

/** The message types of package dragonfly.v1, from the generated module. */
export function staticTypes(): Record<string, StaticType> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const root = require('./supernode-pb') as { dragonfly: { v1: Record<string, StaticType> } };
  return root.dragonfly.v1;
}

function method(name: string, req: StaticType, res: StaticType, requestStream: boolean, responseStream: boolean): grpc.MethodDefinition<object, object> {
  const serialize = (t: StaticType) => (o: object) => Buffer.from(t.encode(t.fromObject(o)).finish());
  const deserialize = (t: StaticType) => (b: Buffer) => t.toObject(t.decode(b), OBJECT_OPTIONS);
  return {
    path: `/dragonfly.v1.Supernode/${name}`,
    requestStream, responseStream,
    requestSerialize: serialize(req), requestDeserialize: deserialize(req),
    responseSerialize: serialize(res), responseDeserialize: deserialize(res),
    originalName: name.charAt(0).toLowerCase() + name.slice(1),
  };
}

export function supernodeService(): grpc.ServiceDefinition {
  if (!service) {
    const t = staticTypes();
    service = {
      Register: method('Register', t.RegisterRequest, t.RegisterResponse, false, false),
      Pieces: method('Pieces', t.PeerMessage, t.SupernodeMessage, true, true),
      Leave: method('Leave', t.LeaveRequest, t.LeaveResponse, false, false),
    };
  }
  return service;
}

export function supernodeClientCtor(): grpc.ServiceClientConstructor {
  clientCtor ??= grpc.makeGenericClientConstructor(supernodeService(), 'Supernode');
  return clientCtor;
}
