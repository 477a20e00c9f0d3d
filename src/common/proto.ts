/**
 * Loads proto/supernode.proto at run time and gives the message shapes as
 * TypeScript types. int64 fields are read as JS numbers (lengths stay far
 * below 2^53).
 */
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

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
export interface PeerMessage { hello?: Hello; result?: PieceResult; kind?: 'hello' | 'result' }
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

let cached: grpc.GrpcObject | undefined;

export function loadProto(): grpc.GrpcObject {
  if (!cached) {
    const def = protoLoader.loadSync(PROTO_PATH, {
      keepCase: false,
      longs: Number,
      enums: String,
      defaults: true,
      arrays: true,
      objects: true,
      oneofs: true,
    });
    cached = grpc.loadPackageDefinition(def);
  }
  return cached;
}

export function supernodeService(): grpc.ServiceDefinition {
  const pkg = (loadProto().dragonfly as grpc.GrpcObject).v1 as grpc.GrpcObject;
  return (pkg.Supernode as grpc.ServiceClientConstructor).service;
}

export function supernodeClientCtor(): grpc.ServiceClientConstructor {
  const pkg = (loadProto().dragonfly as grpc.GrpcObject).v1 as grpc.GrpcObject;
  return pkg.Supernode as grpc.ServiceClientConstructor;
}
