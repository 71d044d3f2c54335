import * as grpc from "@grpc/grpc-js";
import {
  type CallOptions,
  createServiceClient,
  type ServiceClient,
} from "../../src/client/index.js";
import { createManualClock, type ManualClock } from "../../src/core/index.js";
import { createSimulatedStorage, type SimulatedStorage } from "../../src/drivers/index.js";
import { NodeService } from "../../src/gen/debvisor/v1/node_pb.js";
import {
  type DatasetRef,
  StorageBackend,
  StorageService,
} from "../../src/gen/debvisor/v1/storage_pb.js";
import { VmService } from "../../src/gen/debvisor/v1/vm_pb.js";
import { createAccessPolicy } from "../../src/security/index.js";
import { testChannel } from "./grpc-client.js";
import { createTestPki } from "./pki.js";
import { type SecuredServer, startSecuredServer } from "./secured-server.js";

const GIB = 1024 ** 3;
export const DAY_MS = 86_400_000;
/** Where the world's clock starts: a Sunday afternoon. */
export const START = Date.parse("2026-11-22T14:05:02Z");

/** A ZFS dataset reference. */
export const zfs = (name: string): DatasetRef =>
  ({ backend: StorageBackend.BACKEND_ZFS, pool: "tank", name }) as DatasetRef;
/** An RBD image reference. */
export const rbd = (name: string): DatasetRef =>
  ({ backend: StorageBackend.BACKEND_RBD, pool: "rbd", name }) as DatasetRef;

/** A StorageService client calling with one bearer token. */
export type StorageClient = ServiceClient<typeof StorageService>;

/**
 * A secured server over simulated storage: nodes n1, n2, n3; VM vm-a1
 * (tenant acme, on n1) with ZFS disk tank/vm-a1-disk0 (8 GiB, daily
 * snapshots for 10 days) and RBD disk rbd/vm-a1-disk1; VM vm-g1 (tenant
 * globex, on n1) with tank/vm-g1-disk0, which n3 already holds a diverged
 * copy of. Simulated sends advance the manual clock by their duration and
 * wait at `gate` (open unless a test closes it).
 */
export interface StorageWorld {
  readonly server: SecuredServer;
  readonly clock: ManualClock;
  readonly sim: SimulatedStorage;
  /** Clients as an operator (cluster-wide), as acme's developer and as globex's developer. */
  readonly operator: StorageClient;
  readonly acme: StorageClient;
  readonly globex: StorageClient;
  /** Holds simulated sends until the returned function is called. */
  closeGate(): () => void;
  close(): Promise<void>;
}

/** Starts a {@link StorageWorld}. */
export async function startStorageWorld(): Promise<StorageWorld> {
  const pki = await createTestPki();
  const clock = createManualClock(START);
  let gate: Promise<void> = Promise.resolve();
  const daily = (n: number) =>
    Array.from({ length: n }, (_, i) => {
      const createdMs = (Math.floor(START / DAY_MS) - (n - 1 - i)) * DAY_MS;
      return {
        name: `daily-${new Date(createdMs).toISOString().slice(0, 10).replace(/-/g, "")}T000000Z`,
        createdMs,
      };
    });
  const sim = createSimulatedStorage({
    clock,
    sleep: async (ms) => {
      clock.advance(ms);
      await gate;
    },
    datasets: [
      { dataset: zfs("vm-a1-disk0"), nodeId: "n1", sizeBytes: 8 * GIB, snapshots: daily(10) },
      { dataset: rbd("vm-a1-disk1"), nodeId: "n1", sizeBytes: 4 * GIB, snapshots: [] },
      { dataset: zfs("vm-g1-disk0"), nodeId: "n1", sizeBytes: 2 * GIB, snapshots: daily(2) },
      { dataset: zfs("vm-g1-disk0"), nodeId: "n3", sizeBytes: 2 * GIB, snapshots: [] },
    ],
  });
  const server = await startSecuredServer({
    pki,
    clock,
    // acme-west is known only from a binding: no VM or dataset of its own yet.
    policy: createAccessPolicy({
      bindings: [{ principal: "west-viewer", roles: ["viewer"], tenant: "acme-west" }],
    }),
    storage: sim,
  });
  const channels: grpc.Client[] = [];
  const as = async (principal: string, roles: string[], tenant?: string) => {
    const { token } = await server.apiKeys.create({ principal, roles, tenant, createdBy: "test" });
    const ch = testChannel(server.server.address, { caPem: pki.ca.certPem });
    channels.push(ch);
    return withToken(createServiceClient(StorageService, ch), token);
  };
  const operator = await as("ops", ["operator"]);
  const ch = testChannel(server.server.address, { caPem: pki.ca.certPem });
  channels.push(ch);
  const { token } = await server.apiKeys.create({
    principal: "ops2",
    roles: ["operator"],
    createdBy: "test",
  });
  const nodes = withToken(createServiceClient(NodeService, ch), token);
  for (const id of ["n1", "n2", "n3"])
    await nodes.registerNode({ id: { id }, hostname: `${id}.example` });
  await nodes.heartbeat({
    nodeId: { id: "n1" },
    timestamp: { seconds: BigInt(Math.floor(START / 1000)) },
    vms: [
      {
        id: "vm-a1",
        tenant: "acme",
        nodeId: { id: "n1" },
        disks: [zfs("vm-a1-disk0"), rbd("vm-a1-disk1")],
      },
      { id: "vm-g1", tenant: "globex", nodeId: { id: "n1" }, disks: [zfs("vm-g1-disk0")] },
    ],
  });
  // Tenants are assigned by the control plane, not taken from the report.
  const vms = withToken(createServiceClient(VmService, ch), token);
  await vms.setVmTenant({ vmId: "vm-a1", tenant: "acme" });
  await vms.setVmTenant({ vmId: "vm-g1", tenant: "globex" });
  return {
    server,
    clock,
    sim,
    operator,
    acme: await as("acme-dev", ["developer", "viewer"], "acme"),
    globex: await as("globex-ops", ["operator"], "globex"),
    closeGate() {
      let open = () => {};
      gate = new Promise((resolve) => {
        open = resolve;
      });
      return () => {
        gate = Promise.resolve();
        open();
      };
    },
    async close() {
      for (const c of channels) c.close();
      await server.close();
    },
  };
}

/** A client whose every call carries `authorization: Bearer <token>`. */
export function withToken<T extends object>(client: T, token: string): T {
  return new Proxy(client, {
    get(target, prop) {
      const method = (target as Record<string | symbol, unknown>)[prop];
      if (typeof method !== "function") return method;
      return (request: unknown, options: CallOptions = {}) => {
        const metadata = options.metadata?.clone() ?? new grpc.Metadata();
        metadata.set("authorization", `Bearer ${token}`);
        return (method as (r: unknown, o: CallOptions) => unknown).call(target, request, {
          ...options,
          metadata,
        });
      };
    },
  });
}

/** The gRPC code and catalogue reason a call failed with (undefined fields when it succeeded). */
export async function failure(
  call: Promise<unknown>,
): Promise<{ code?: number; reason?: string; details?: string }> {
  try {
    await call;
    return {};
  } catch (err) {
    const e = err as grpc.ServiceError;
    return {
      code: e.code,
      reason: String(e.metadata?.get("debvisor-error-reason")[0] ?? ""),
      details: e.details,
    };
  }
}

/**
 * A smaller world for replication: a secured server over simulated storage
 * holding each ZFS dataset of `copies` (8 GiB, one snapshot in common), the
 * nodes registered; `as` makes a bearer token's clients, `ops` is an
 * operator's node client (for reports).
 */
export async function startReplicationWorld(
  nodeIds: readonly string[],
  copies: readonly { readonly disk: string; readonly node: string }[],
) {
  const pki = await createTestPki();
  const clock = createManualClock(START);
  const snaps = [{ name: "daily-20261122T000000Z", createdMs: START - 3_600_000 }];
  const sim = createSimulatedStorage({
    clock,
    sleep: async (ms) => {
      clock.advance(ms);
    },
    datasets: copies.map((c) => ({
      dataset: zfs(c.disk),
      nodeId: c.node,
      sizeBytes: 8 * GIB,
      snapshots: snaps,
    })),
  });
  const server = await startSecuredServer({
    pki,
    clock,
    policy: createAccessPolicy({ bindings: [] }),
    storage: sim,
  });
  const ch = testChannel(server.server.address, { caPem: pki.ca.certPem });
  const as = async (principal: string, roles: string[], tenant?: string) => {
    const { token } = await server.apiKeys.create({ principal, roles, tenant, createdBy: "test" });
    return {
      storage: withToken(createServiceClient(StorageService, ch), token),
      nodes: withToken(createServiceClient(NodeService, ch), token),
      vms: withToken(createServiceClient(VmService, ch), token),
    };
  };
  const ops = await as("ops", ["operator"]);
  for (const id of nodeIds) await ops.nodes.registerNode({ id: { id }, hostname: `${id}.example` });
  return {
    sim,
    as,
    ops,
    async close() {
      ch.close();
      await server.close();
    },
  };
}
