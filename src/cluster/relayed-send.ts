/**
 * A replication send between two nodes whose agents run storage, relayed
 * by this process: the target agent receives and the source agent sends,
 * each dialling this process (the operation names its address) with its own
 * node certificate and one-time ticket. The `sendSnapshot` of
 * `createAgentStorage` when both nodes run storage agents.
 */
import { type Logger, RpcError } from "../core/index.js";
import { encodeStorageParams, type SendOptions } from "../drivers/index.js";
import { OperationKind } from "../gen/debvisor/v1/agent_pb.js";
import type { AgentStorageCalls } from "./agent-storage-calls.js";

/** After one side of a transfer failed, how long the other gets to report its end. */
const PEER_GRACE_MS = 30_000;

/**
 * Runs `send` as RECEIVE_SNAPSHOT on the target's agent and SEND_SNAPSHOT
 * on the source's, through a transfer issued by the relay of `fromNode`'s
 * hub; resolves with the bytes moved once both succeed, else rejects with
 * the more telling side's error (the receiver's before a broken pipe).
 * AGENT_NOT_CONNECTED if either agent runs no storage or this process is
 * not serving yet.
 */
export async function relayedSend(
  send: SendOptions,
  calls: AgentStorageCalls,
  log: Logger,
): Promise<{ bytes: number }> {
  const hub = await calls.hubFor(send.fromNode, send.signal);
  await calls.hubFor(send.toNode, send.signal);
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
    calls.start(
      send.toNode,
      `${id}-recv`,
      OperationKind.RECEIVE_SNAPSHOT,
      { ...params, relay, ticket: transfer.downloadTicket },
      signal,
    ),
    calls.start(
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
    errors.find((e) => e.reason !== "STORAGE_UNAVAILABLE" && e.reason !== "CANCELLED") ?? errors[0]
  );
}
