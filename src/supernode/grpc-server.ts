/** The supernode's gRPC face: validates every message at the edge, then hands it to the TaskManager. */
import * as grpc from '@grpc/grpc-js';
import { grpcError, invalidArgument, toDfError } from '../common/errors';
import type { Logger } from '../common/logger';
import type { SupernodeMetrics } from '../common/metrics';
import { supernodeService, type LeaveRequest, type PeerMessage, type RegisterRequest, type RegisterResponse, type SupernodeMessage } from '../common/proto';
import { validPort, type TaskManager } from './task-manager';
import type { Task } from './task';

export function supernodeHandlers(tm: TaskManager, log: Logger, metrics: SupernodeMetrics): grpc.UntypedServiceImplementation {
  return {
    Register(call: grpc.ServerUnaryCall<RegisterRequest, RegisterResponse>, cb: grpc.sendUnaryData<RegisterResponse>) {
      tm.register(call.request).then(
        (res) => { metrics.registrations.inc({ result: 'success' }); cb(null, res); },
        (err) => {
          const e = toDfError(err);
          metrics.registrations.inc({ result: e.code });
          log.info({ code: e.code, err: e.message }, 'register refused');
          cb(grpcError(e));
        },
      );
    },

    Pieces(call: grpc.ServerDuplexStream<PeerMessage, SupernodeMessage>) {
      let task: Task | undefined;
      let peerId = '';
      const refuse = (err: unknown) => {
        const e = grpcError(err);
        log.info({ peerId, details: e.details }, 'pieces stream refused');
        // grpc-js turns an 'error' on a server stream into the call's final status.
        call.emit('error', e);
      };
      call.on('data', (msg: PeerMessage) => {
        try {
          if (!task) {
            if (!msg.hello) throw invalidArgument('the first message of a pieces stream must be a hello');
            peerId = msg.hello.peerId;
            task = tm.hello(call, msg.hello);
            return;
          }
          if (msg.serving) {
            if (!validPort(msg.serving.peerPort)) throw invalidArgument('serving.peer_port must be 1-65535');
            task.peerServing(peerId, msg.serving.peerPort);
            return;
          }
          const r = msg.result;
          if (!r) return; // A repeated hello is harmless: ignore it.
          if (!Number.isInteger(r.piece) || r.piece < 0 || typeof r.holderId !== 'string') {
            log.warn({ peerId }, 'malformed piece result ignored');
            return;
          }
          task.onResult(peerId, r.piece, r.holderId, r.success);
        } catch (err) {
          refuse(err);
        }
      });
      const closed = (why: string) => { if (task) { task.streamClosed(peerId, call, why); task = undefined; } };
      call.on('end', () => { closed('ended by the peer'); if (!call.writableEnded) call.end(); });
      call.on('error', () => closed('error'));
      call.on('close', () => closed('closed'));
      call.on('cancelled', () => closed('cancelled'));
    },

    Leave(call: grpc.ServerUnaryCall<LeaveRequest, object>, cb: grpc.sendUnaryData<object>) {
      log.debug({ peerId: call.request.peerId, taskId: call.request.taskId, from: call.getPeer() }, 'leave');
      tm.leave(String(call.request.peerId ?? ''), String(call.request.taskId ?? ''));
      cb(null, {});
    },
  };
}

export async function startGrpcServer(impl: grpc.UntypedServiceImplementation, host: string, port: number): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server({
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.max_receive_message_length': 1024 * 1024,
  });
  server.addService(supernodeService(), impl);
  const bound = await new Promise<number>((res, rej) => {
    server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? rej(err) : res(p)));
  });
  return { server, port: bound };
}
