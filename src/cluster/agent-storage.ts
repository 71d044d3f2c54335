import { randomUUID } from "node:crypto";
import { type Logger, REASONS, type Reason, RpcError } from "../core/index.js";
import {
  canReplicate,
  canSnapshot,
  encodeStorageParams,
  type SendOptions,
  type StorageDriver,
  type StorageParams,
  type ZfsReplicationDriver,
} from "../drivers/index.js";
import { OperationKind, OperationOutcome } from "../gen/debvisor/v1/agent_pb.js";
import type { AgentHub } from "./agent-hub.js";
import type { AgentAnswer } from "./agent-requests.js";

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
 * whose agent runs a storage driver (Hello capability `storage:<kind>`)
 * becomes an operation for that agent; anything else goes to the local
 * driver, as before. A send between two such nodes is relayed: the target
 * agent receives and the source agent sends, each with its own one-time
 * ticket pushed on its stream, the bytes through this process's relay.
 * Both streams must be on this process (AGENT_NOT_CONNECTED otherwise).
 */
export function createAgentStorage(options: AgentStorageOptions): StorageDriver {
  const { local } = options;
  const log = options.logger.child({ component: "agent-storage" });
  const timeoutMs = options.timeoutMs ?? 120_000;

  const runsStorage = (nodeId: string | undefined): boolean =>
    nodeId !== undefined &&
    (options.hub()?.capabilitiesOf(nodeId) ?? []).some((c) => c.startsWith("storage:"));

  const hubFor = (nodeId: string): AgentHub => {
    const hub = options.hub();
    if (hub === undefined || !runsStorage(nodeId))
      throw new RpcError("AGENT_NOT_CONNECTED", {
        cause: new Error(`no storage agent stream of ${nodeId} here`),
      });
    return hub;
  };

  /** Starts an operation on a node's agent; its answer, or its coded failure. */
  function start(
    nodeId: string,
    operationId: string,
    kind: OperationKind,
    params: StorageParams,
    signal: AbortSignal,
  ): Promise<AgentAnswer> {
    const hub = hubFor(nodeId);
    const answer = hub.requests.wait(nodeId, operationId, signal);
    return hub.operations
      .submit(
        nodeId,
        {
          operationId,
          kind,
          vmId: "",
          params: encodeStorageParams(params),
          generation: 0n,
        },
        REQUESTED_BY,
        signal,
      )
      .then(
        () => answer,
        (err: unknown) => {
          answer.catch(() => {});
          throw err;
        },
      )
      .then((a) => {
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

  const ask = (nodeId: string, kind: OperationKind, params: StorageParams, signal: AbortSignal) =>
    start(
      nodeId,
      `st-${randomUUID()}`,
      kind,
      params,
      AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]),
    );

  async function relayedSend(send: SendOptions): Promise<{ bytes: number }> {
    const hub = hubFor(send.fromNode);
    hubFor(send.toNode);
    const transfer = hub.relay.issue(
      { jobId: send.jobId ?? "", source: send.fromNode, target: send.toNode },
      (bytes) => send.onProgress?.(bytes, 0),
    );
    const id = `xfer-${transfer.id}`;
    const stop = new AbortController();
    const signal = AbortSignal.any([send.signal, stop.signal]);
    const pushed =
      hub.push(send.toNode, {
        kind: {
          case: "transferTicket",
          value: { operationId: `${id}-recv`, ticket: transfer.downloadTicket },
        },
      }) &&
      hub.push(send.fromNode, {
        kind: {
          case: "transferTicket",
          value: { operationId: `${id}-send`, ticket: transfer.uploadTicket },
        },
      });
    if (!pushed) {
      transfer.abort(new RpcError("AGENT_NOT_CONNECTED"));
      throw new RpcError("AGENT_NOT_CONNECTED");
    }
    const params = {
      dataset: send.dataset,
      snapshot: send.snapshot,
      base: send.base,
      bandwidth: send.bandwidthLimit,
    };
    const sides = [
      start(send.toNode, `${id}-recv`, OperationKind.RECEIVE_SNAPSHOT, params, signal),
      start(send.fromNode, `${id}-send`, OperationKind.SEND_SNAPSHOT, params, signal),
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
      if (!runsStorage(nodeId)) return local.listSnapshots(dataset, signal, nodeId);
      const a = await ask(nodeId as string, OperationKind.LIST_SNAPSHOTS, { dataset }, signal);
      return a.report?.found === true ? a.report.snapshots : undefined;
    },
    async createSnapshot(target, signal) {
      if (!runsStorage(target.nodeId)) {
        if (!canSnapshot(local)) throw new RpcError("STORAGE_UNSUPPORTED");
        return local.createSnapshot(target, signal);
      }
      const a = await ask(
        target.nodeId as string,
        OperationKind.CREATE_SNAPSHOT,
        { dataset: target.dataset, snapshot: target.name },
        signal,
      );
      const made = a.report?.snapshots[0];
      if (made === undefined) throw new RpcError("SNAPSHOT_NOT_FOUND");
      return made;
    },
    async deleteSnapshot(target, signal) {
      if (!runsStorage(target.nodeId)) {
        if (!canSnapshot(local)) throw new RpcError("STORAGE_UNSUPPORTED");
        return local.deleteSnapshot(target, signal);
      }
      await ask(
        target.nodeId as string,
        OperationKind.DESTROY_SNAPSHOT,
        { dataset: target.dataset, snapshot: target.name },
        signal,
      );
    },
    async sendSnapshot(send) {
      const agents = [send.fromNode, send.toNode].filter(runsStorage).length;
      if (agents === 2) return relayedSend(send);
      if (agents === 1)
        throw new RpcError("AGENT_NOT_CONNECTED", {
          message: "both nodes' agents must be connected to the process running the send",
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
