import { randomUUID } from "node:crypto";
import { type Logger, REASONS, type Reason, RpcError, timeoutSignal } from "../core/index.js";
import {
  canReplicate,
  canSnapshot,
  encodeStorageParams,
  type SendOptions,
  type StorageDriver,
  type ZfsReplicationDriver,
} from "../drivers/index.js";
import {
  OperationKind,
  OperationOutcome,
  type OperationResult,
  type StorageReport,
} from "../gen/debvisor/v1/agent_pb.js";
import type { AgentHub } from "./agent-hub.js";

/** What an agent answered to one operation. */
interface AgentAnswer {
  readonly result: OperationResult;
  /** The StorageReport sent just before the result. */
  readonly report?: StorageReport;
}

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

/** After one side of a transfer failed, how long the other gets to report its end. */
const PEER_GRACE_MS = 30_000;

/** Who asks, in operation records. */
const REQUESTED_BY = "system:storage";

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
  const timeoutMs = options.timeoutMs ?? 120_000;

  const runsStorage = async (nodeId: string | undefined, signal: AbortSignal) =>
    nodeId !== undefined &&
    ((await options.hub()?.agentCapabilities(nodeId, signal)) ?? []).some((c) =>
      c.startsWith("storage:"),
    );

  const hubFor = async (nodeId: string, signal: AbortSignal): Promise<AgentHub> => {
    const hub = options.hub();
    if (hub === undefined || !(await runsStorage(nodeId, signal)))
      throw new RpcError("AGENT_NOT_CONNECTED", {
        cause: new Error(`no storage agent of ${nodeId} connected`),
      });
    return hub;
  };

  /** Starts an operation on a node's agent; its answer, or its coded failure. */
  async function start(
    nodeId: string,
    operationId: string,
    kind: OperationKind,
    params: Record<string, string>,
    signal: AbortSignal,
  ): Promise<AgentAnswer> {
    const hub = await hubFor(nodeId, signal);
    return hub.operations
      .submit(
        nodeId,
        {
          operationId,
          kind,
          vmId: "",
          params,
          generation: 0n,
        },
        REQUESTED_BY,
        signal,
      )
      .then(async () => {
        const done = await hub.operations.finished(nodeId, operationId, signal);
        return {
          result: done.result ?? ({ outcome: OperationOutcome.FAILED } as OperationResult),
          report: done.storageReport,
        };
      })
      .then((a: AgentAnswer) => {
        if (a.result.outcome === OperationOutcome.SUCCEEDED) return a;
        const reason = (
          a.result.reason in REASONS ? a.result.reason : "STORAGE_UNAVAILABLE"
        ) as Reason;
        throw new RpcError(reason, { message: a.result.message || undefined });
      })
      .catch((err: unknown) => {
        if (signal.aborted)
          void hub.operations.requestCancel(nodeId, operationId).catch(() => undefined);
        throw err;
      });
  }

  const ask = (
    nodeId: string,
    kind: OperationKind,
    params: Record<string, string>,
    signal: AbortSignal,
  ) => start(nodeId, `st-${randomUUID()}`, kind, params, timeoutSignal(timeoutMs, signal));

  async function relayedSend(send: SendOptions): Promise<{ bytes: number }> {
    const hub = await hubFor(send.fromNode, send.signal);
    await hubFor(send.toNode, send.signal);
    const relay = hub.relayAddress();
    if (relay === undefined)
      throw new RpcError("AGENT_NOT_CONNECTED", { message: "this process is not serving yet" });
    const transfer = hub.relay.issue(
      { jobId: send.jobId ?? "", source: send.fromNode, target: send.toNode },
      (bytes) => send.onProgress?.(bytes, 0),
    );
    const id = `xfer-${transfer.id}`;
    const stop = new AbortController();
    const signal = AbortSignal.any([send.signal, stop.signal]);
    const params = encodeStorageParams({
      dataset: send.dataset,
      snapshot: send.snapshot,
      base: send.base,
      bandwidth: send.bandwidthLimit,
    });
    // Each side's ticket rides in its operation (bound to its node's certificate, used once,
    // forgotten with the result), with the address of this process, the relay both dial.
    const sides = [
      start(
        send.toNode,
        `${id}-recv`,
        OperationKind.RECEIVE_SNAPSHOT,
        { ...params, relay, ticket: transfer.downloadTicket },
        signal,
      ),
      start(
        send.fromNode,
        `${id}-send`,
        OperationKind.SEND_SNAPSHOT,
        { ...params, relay, ticket: transfer.uploadTicket },
        signal,
      ),
    ];
    // The first side to fail ends the transfer, so the other side's call fails soon after.
    for (const side of sides)
      side.catch((err: unknown) => {
        transfer.abort(err instanceof RpcError ? err : new RpcError("STORAGE_UNAVAILABLE"));
        // An agent that lost its stream answers only once it is back: wait for it a while, not forever.
        setTimeout(() => stop.abort(), PEER_GRACE_MS).unref();
      });
    const [received, sent] = await Promise.allSettled(sides);
    stop.abort();
    if (received.status === "fulfilled" && sent.status === "fulfilled") {
      const bytes = Number(received.value.report?.bytes ?? BigInt(transfer.bytes()));
      send.onProgress?.(bytes, bytes);
      log.info(
        { transfer: transfer.id, from: send.fromNode, to: send.toNode, bytes },
        "relayed send done",
      );
      return { bytes };
    }
    // The receiver's complaint explains more (a diverged target) than the sender's broken pipe.
    const errors = [received, sent]
      .filter((r): r is PromiseRejectedResult => r.status === "rejected")
      .map((r) => (r.reason instanceof RpcError ? r.reason : new RpcError("STORAGE_UNAVAILABLE")));
    throw (
      errors.find((e) => e.reason !== "STORAGE_UNAVAILABLE" && e.reason !== "CANCELLED") ??
      errors[0]
    );
  }

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
      if (agents === 2) return relayedSend(send);
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
