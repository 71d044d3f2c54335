/**
 * The daemon's storage driver when nodes run agents: the composition that
 * sends a call to the node's storage agent (`createAgentStorageCalls`), or
 * relays a send between two of them (`relayedSend`), or leaves it to the
 * local driver.
 */
import { type Logger, RpcError } from "../core/index.js";
import {
  canReplicate,
  canSnapshot,
  encodeStorageParams,
  type StorageDriver,
  type ZfsReplicationDriver,
} from "../drivers/index.js";
import { OperationKind } from "../gen/debvisor/v1/agent_pb.js";
import type { AgentHub } from "./agent-hub.js";
import { createAgentStorageCalls } from "./agent-storage-calls.js";
import { relayedSend } from "./relayed-send.js";

/** Options of {@link createAgentStorage}. */
export interface AgentStorageOptions {
  /** The control plane's own driver, for nodes whose agents run no storage. */
  readonly local: StorageDriver;
  /** The hub, once the daemon has one. */
  readonly hub: () => AgentHub | undefined;
  readonly logger: Logger;
  /** Limit of one storage operation other than a transfer (default 2 min). */
  readonly timeoutMs?: number;
}

/**
 * The daemon's storage driver when nodes run agents: a call naming a node
 * whose agent runs a storage driver (Hello capability `storage:<kind>`,
 * wherever its stream is) becomes an operation for that agent, written to
 * the store and answered from it; anything else goes to the local driver,
 * as before. A send between two such nodes is relayed by this process: the
 * target agent receives and the source agent sends, each dialling this
 * process (the operation names its address) with its own node certificate
 * and one-time ticket, whichever control-plane process holds its stream.
 */
export function createAgentStorage(options: AgentStorageOptions): StorageDriver {
  const { local } = options;
  const log = options.logger.child({ component: "agent-storage" });
  const calls = createAgentStorageCalls({
    hub: options.hub,
    timeoutMs: options.timeoutMs ?? 120_000,
  });
  const { runsStorage, ask } = calls;

  const driver: ZfsReplicationDriver = {
    async listSnapshots(dataset, signal, nodeId) {
      if (!(await runsStorage(nodeId, signal))) return local.listSnapshots(dataset, signal, nodeId);
      const a = await ask(
        nodeId as string,
        OperationKind.LIST_SNAPSHOTS,
        encodeStorageParams({ dataset }),
        signal,
      );
      return a.report?.found === true ? a.report.snapshots : undefined;
    },
    async createSnapshot(target, signal) {
      if (!(await runsStorage(target.nodeId, signal))) {
        if (!canSnapshot(local)) throw new RpcError("STORAGE_UNSUPPORTED");
        return local.createSnapshot(target, signal);
      }
      const a = await ask(
        target.nodeId as string,
        OperationKind.CREATE_SNAPSHOT,
        encodeStorageParams({ dataset: target.dataset, snapshot: target.name }),
        signal,
      );
      const made = a.report?.snapshots[0];
      if (made === undefined) throw new RpcError("SNAPSHOT_NOT_FOUND");
      return made;
    },
    async deleteSnapshot(target, signal) {
      if (!(await runsStorage(target.nodeId, signal))) {
        if (!canSnapshot(local)) throw new RpcError("STORAGE_UNSUPPORTED");
        return local.deleteSnapshot(target, signal);
      }
      await ask(
        target.nodeId as string,
        OperationKind.DESTROY_SNAPSHOT,
        encodeStorageParams({ dataset: target.dataset, snapshot: target.name }),
        signal,
      );
    },
    async sendSnapshot(send) {
      const agents = (
        await Promise.all([send.fromNode, send.toNode].map((n) => runsStorage(n, send.signal)))
      ).filter(Boolean).length;
      if (agents === 2) return relayedSend(send, calls, log);
      if (agents === 1)
        throw new RpcError("AGENT_NOT_CONNECTED", {
          message: "both nodes' agents must be connected for the send",
        });
      if (!canReplicate(local)) throw new RpcError("STORAGE_UNSUPPORTED");
      return local.sendSnapshot(send);
    },
  };
  // Abilities only the local driver has (RBD clones, sizes) stay as they are.
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(local))
    if (typeof fn === "function") out[name] = (fn as (...a: unknown[]) => unknown).bind(local);
  return Object.assign(out, driver) as unknown as StorageDriver;
}
