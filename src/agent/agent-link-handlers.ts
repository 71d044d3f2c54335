/**
 * What the node agent says on its stream and does with what it is sent:
 * the Hello and heartbeats (each after the self-fence's guard), the
 * Welcome configuring the fence, and dispatches, cancels, lease renewals
 * and transfer tickets handed to their parts. The handlers `runAgent`
 * gives `runAgentLink`.
 */
import { packageVersion, type SystemdNotifier } from "../client/index.js";
import type { Logger } from "../core/index.js";
import type { OperationExecutor } from "../drivers/index.js";
import type { DatasetRef } from "../gen/debvisor/v1/storage_pb.js";
import type { AgentLinkOptions } from "./agent-link.js";
import type { FencedVmReports } from "./fenced-vm-reports.js";
import type { NodeHypervisor } from "./node-hypervisor.js";
import type { NodeStorage } from "./node-storage.js";
import type { SelfFence } from "./self-fence.js";
import type { StorageOperations } from "./storage-operations.js";

/** The parts of {@link AgentLinkOptions} that say and hear what the node does. */
export type AgentLinkHandlers = Pick<
  AgentLinkOptions,
  "hello" | "heartbeat" | "onWelcome" | "onMessage" | "onDown"
>;

/** What {@link createAgentLinkHandlers} works with, all built by `runAgent`. */
export interface AgentLinkHandlersDeps {
  readonly nodeId: string;
  readonly hv: NodeHypervisor;
  readonly storage: NodeStorage | undefined;
  /** The Hello's capabilities. */
  readonly capabilities: string[];
  readonly fence: SelfFence;
  readonly fenced: FencedVmReports;
  readonly executor: OperationExecutor;
  readonly storageOps: StorageOperations;
  readonly notifier: SystemdNotifier;
  readonly log: Logger;
  /** The clock the node's reports are stamped with (a fault may offset it). */
  readonly now: () => number;
}

/**
 * The stream's handlers: every message it sends is built, and every one it
 * receives acted on, only once the self-fence has checked the node's clock
 * (`fence.guard`).
 */
export function createAgentLinkHandlers(deps: AgentLinkHandlersDeps): AgentLinkHandlers {
  const { fence, hv, fenced, executor } = deps;
  return {
    async hello() {
      await fence.guard(() => {
        fence.newStream();
        fence.sending(0n);
      });
      const { health, datasets } = await hv.inventory(AbortSignal.timeout(30_000));
      const ms = deps.now();
      return {
        kind: {
          case: "hello",
          value: {
            info: hv.info,
            agentVersion: packageVersion(),
            capabilities: deps.capabilities,
            health,
            datasets: withStorage(datasets, deps.storage?.datasets() ?? []),
            sentAt: { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 },
          },
        },
      };
    },
    async heartbeat(sequence) {
      // A missed deadline is acted on before the domains are listed, as they then are. The
      // send time is taken once the report is built: taken before, a slow listing (up to
      // 30 s) was counted out of the lease it renews, and past half a window every HA start
      // and recover on a healthy node failed FENCED (lease-waiters.ts).
      await fence.guard(() => undefined);
      const { health } = await hv.inventory(AbortSignal.timeout(30_000));
      await fence.guard(() => fence.sending(sequence));
      return { kind: { case: "heartbeat", value: { health, sequence } } };
    },
    onWelcome(welcome, server, serverCertificate) {
      const serverMs =
        Number(welcome.serverTime?.seconds ?? 0n) * 1000 +
        Math.floor((welcome.serverTime?.nanos ?? 0) / 1e6);
      deps.log.info(
        {
          server,
          serverId: welcome.serverId,
          serverCertificate,
          skewMs: Date.now() - serverMs,
          node: deps.nodeId,
        },
        "connected to the control plane",
      );
      void deps.notifier.status(`connected to ${server}`);
      // The server recorded the Hello before it welcomed: that is the stream's first renewal.
      void fence.guard(() => {
        fence.configure(welcome.selfFenceWindowMs);
        fence.renewed(0n);
        fenced.flush();
      });
    },
    onMessage(m) {
      const k = m.kind;
      void fence.guard(() => {
        if (k.case === "dispatch") {
          fenced.taken(k.value.vmId);
          executor.dispatch(k.value);
        } else if (k.case === "cancel") executor.cancel(k.value.operationId);
        else if (k.case === "leaseRenewed") fence.renewed(k.value.sequence);
        else if (k.case === "transferTicket")
          deps.storageOps.ticket(k.value.operationId, k.value.ticket);
      });
    },
    onDown(reason) {
      void deps.notifier.status(`reconnecting: ${reason}`);
    },
  };
}

/** The VMs' disks and the storage's datasets, each once. */
function withStorage(disks: DatasetRef[], held: DatasetRef[]): DatasetRef[] {
  const seen = new Map<string, DatasetRef>();
  for (const d of [...disks, ...held]) seen.set(`${d.backend}:${d.pool}/${d.name}`, d);
  return [...seen.values()];
}
