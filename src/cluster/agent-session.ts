/**
 * One agent's stream held by this process, as the hub's parts share it: the
 * send queue, the operations sent and known on it, and what its last report
 * listed. Built once the stream's Hello is read (agent-stream-opener.ts).
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { RpcError } from "../core/index.js";
import type { OperationRecord } from "../gen/debvisor/store/v1/agent_records_pb.js";
import type { ControlMessageSchema, Hello, StorageReport } from "../gen/debvisor/v1/agent_pb.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import type { Versioned } from "../store/index.js";
import type { GuardedStream } from "./agent-stream-guard.js";
import { createSendQueue, type SendQueue } from "./send-queue.js";

/** A message the control plane sends on an agent's stream. */
export type Outgoing = MessageInitShape<typeof ControlMessageSchema>;

/** A node's stream held by this process. */
export interface AgentSession extends GuardedStream {
  readonly nodeId: string;
  /** The store revision of the presence record this stream wrote (0 until written). */
  presenceRevision: number;
  readonly queue: SendQueue<Outgoing>;
  /** Operation ids sent on this stream and not done (a watch event repeats them). */
  readonly sent: Set<string>;
  /**
   * The node's open operations as the watch last showed them, with their
   * revisions: its delivery, progress and result are written on them without
   * a read first (a stale one costs the read). Dropped when done.
   */
  readonly known: Map<string, Versioned<OperationRecord>>;
  readonly cancelled: Set<string>;
  readonly capabilities: readonly string[];
  /** StorageReports waiting for their operation's result, by operation id (of operations in `sent`). */
  readonly reports: Map<string, StorageReport>;
  /**
   * The VMs of the stream's last report that listed them (its Hello or a
   * heartbeat): what a heartbeat with vms_unchanged reports. The array the
   * inventory stores only while the report is stored as sent: where the
   * control plane's facts (tenant, labels, managed) differ from the node's
   * report, or a VM is left out, the inventory stores a copy and this list
   * is a second one (one list per stream).
   */
  vms: VmInfo[];
  /**
   * While the node's open operations are read (a resync), the watch's
   * records for it wait here, offered after those read: an operation
   * submitted during the read never overtakes an older one.
   */
  held?: OperationRecord[];
  /**
   * Set while a resync reads: a second resync asked meanwhile (the watch
   * restarted) makes it read again instead of running beside it, since two
   * reads releasing one set of held records could send an operation after a
   * newer one.
   */
  rereading?: { again: boolean };
  /**
   * While a start's delivery is written before it is sent
   * (agent-start-claims.ts), the records of its VM offered meanwhile wait
   * here, by VM id, in order, offered after it: nothing on that VM
   * overtakes it.
   */
  claiming?: Map<string, OperationRecord[]>;
  /**
   * Operations seen DONE while records were held: forgotten only once those
   * are offered, or a held earlier record of one would be sent again.
   */
  readonly doneWhileHeld: Set<string>;
}

/**
 * The session of a stream whose Hello named `nodeId`, with a send queue of
 * at most `sendQueueMax` messages; nothing is sent on it before its node's
 * open operations are read.
 */
export function newAgentSession(nodeId: string, hello: Hello, sendQueueMax: number): AgentSession {
  const queue = createSendQueue<Outgoing>(sendQueueMax);
  return {
    nodeId,
    presenceRevision: 0,
    queue,
    replace: () => queue.close(new RpcError("AGENT_STREAM_REPLACED")),
    sent: new Set(),
    known: new Map(),
    doneWhileHeld: new Set(),
    cancelled: new Set(),
    capabilities: [...hello.capabilities],
    reports: new Map(),
    vms: hello.health?.vms ?? [],
    // Held from the start: nothing is sent before the open operations are read.
    held: [],
  };
}
