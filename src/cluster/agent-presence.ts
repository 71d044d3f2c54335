import { RpcError } from "../core/index.js";
import {
  type AgentPresenceRecord,
  AgentPresenceRecordSchema,
} from "../gen/debvisor/store/v1/agent_presence_records_pb.js";
import { OperationKind } from "../gen/debvisor/v1/agent_pb.js";
import { encodeMessage, getMessage, type KvStore, type Versioned } from "../store/index.js";

/** Key family of connected agents: agents/<node>. */
export const AGENTS_PREFIX = "agents/";

/**
 * The Hello capability that lets an agent run an operation kind:
 * `op:` and the kind's name in kebab case (OPERATION_KIND_START_VM is
 * `op:start-vm`), as agents name them.
 */
export function capabilityOf(kind: OperationKind): string {
  const name = OperationKind[kind] ?? "UNSPECIFIED";
  return `op:${name.toLowerCase().replaceAll("_", "-")}`;
}

/** AGENT_CAPABILITY_MISSING for `kind` on `nodeId`, when the capabilities do not name it. */
export function checkCapability(
  capabilities: readonly string[],
  kind: OperationKind,
  nodeId: string,
): void {
  const wanted = capabilityOf(kind);
  if (!capabilities.includes(wanted))
    throw new RpcError("AGENT_CAPABILITY_MISSING", {
      message: `the agent of ${nodeId} does not run ${wanted}`,
    });
}

/**
 * Where each node's agent is connected, as the process holding its stream
 * wrote it: any control-plane process reads what an agent runs before it
 * writes an operation for it. A record goes when its stream ends; one left
 * by a crashed process is replaced when the agent connects again.
 */
export interface AgentPresence {
  /** Records the agent's Hello; resolves with the record's revision (for {@link gone}). */
  connected(nodeId: string, record: AgentPresenceRecord, signal?: AbortSignal): Promise<number>;
  /** Deletes the record if it is still the one written at `revision`. */
  gone(nodeId: string, revision: number): Promise<void>;
  /** The capabilities of the node's connected agent, undefined when none is connected. */
  capabilities(nodeId: string, signal?: AbortSignal): Promise<readonly string[] | undefined>;
  /** The node's record as stored now, with its revision; undefined when none is connected. */
  current(
    nodeId: string,
    signal?: AbortSignal,
  ): Promise<Versioned<AgentPresenceRecord> | undefined>;
}

/** Creates the store-backed {@link AgentPresence}. */
export function createAgentPresence(store: KvStore): AgentPresence {
  const key = (nodeId: string) => AGENTS_PREFIX + nodeId;
  const current = (nodeId: string, signal?: AbortSignal) =>
    getMessage(store, AgentPresenceRecordSchema, key(nodeId), { signal });
  return {
    async connected(nodeId, record, signal) {
      return store.put(key(nodeId), encodeMessage(AgentPresenceRecordSchema, record), { signal });
    },
    async gone(nodeId, revision) {
      await store.txn({
        compares: [{ key: key(nodeId), modRevision: revision }],
        success: [{ type: "delete", key: key(nodeId) }],
      });
    },
    async capabilities(nodeId, signal) {
      return (await current(nodeId, signal))?.message.capabilities;
    },
    current,
  };
}
