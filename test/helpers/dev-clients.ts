import { readFileSync } from "node:fs";
import type * as grpc from "@grpc/grpc-js";
import {
  agentFiles,
  createServiceClient,
  openChannel,
  type ResolvedContext,
} from "../../src/client/index.js";
import { AccessService } from "../../src/gen/debvisor/v1/access_pb.js";
import { AuditService } from "../../src/gen/debvisor/v1/audit_pb.js";
import { EventService } from "../../src/gen/debvisor/v1/event_pb.js";
import { MigrationService } from "../../src/gen/debvisor/v1/migration_pb.js";
import { NodeService } from "../../src/gen/debvisor/v1/node_pb.js";
import { EnrollmentService } from "../../src/gen/debvisor/v1/pki_pb.js";
import { StorageService } from "../../src/gen/debvisor/v1/storage_pb.js";
import { VmService } from "../../src/gen/debvisor/v1/vm_pb.js";
import { WatchService } from "../../src/gen/debvisor/v1/watch_pb.js";

/** How a call ended: its gRPC code (OK: 0) and the server's `debvisor-error-reason`. */
export function callOutcome(p: Promise<unknown>): Promise<{ code: number; reason: string }> {
  return p.then(
    () => ({ code: 0, reason: "" }),
    (e: grpc.ServiceError) => ({
      code: e.code,
      reason: String(e.metadata?.get("debvisor-error-reason")[0] ?? ""),
    }),
  );
}

/** Typed clients of every service on one channel for `ctx`; the channel goes into `channels` to be closed. */
export function devClients(ctx: ResolvedContext, channels: grpc.Client[]) {
  const ch = openChannel(ctx);
  channels.push(ch);
  return {
    access: createServiceClient(AccessService, ch),
    audit: createServiceClient(AuditService, ch),
    events: createServiceClient(EventService, ch),
    migrations: createServiceClient(MigrationService, ch),
    nodes: createServiceClient(NodeService, ch),
    pki: createServiceClient(EnrollmentService, ch),
    storage: createServiceClient(StorageService, ch),
    vms: createServiceClient(VmService, ch),
    watch: createServiceClient(WatchService, ch),
  };
}

/** `base` (server, CA) calling with a bearer token (API key or JWT) instead of its certificate. */
export function bearerContext(base: ResolvedContext, token: string): ResolvedContext {
  return { ...base, certPem: undefined, keyPem: undefined, bearer: token };
}

/** `base` (server, CA) calling with the certificate an agent enrolled into `agentDir` (as that node). */
export function agentContext(base: ResolvedContext, agentDir: string): ResolvedContext {
  const f = agentFiles(agentDir);
  return { ...base, certPem: readFileSync(f.cert, "utf8"), keyPem: readFileSync(f.key, "utf8") };
}
