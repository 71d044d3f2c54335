/**
 * HA VMs this node stopped on its own: told to the control plane on every
 * new stream (and kept in host-boot.ts's file, across a restart) until an operation on the VM (its restart, or an operator's
 * call) shows the control plane has taken it over. Part of `runAgent`.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentMessageSchema } from "../gen/debvisor/v1/agent_pb.js";

/** The self-fenced VMs not yet taken over, and telling the control plane of them. */
export interface FencedVmReports {
  /**
   * `vmId` was hard-stopped `at` (ms, on the node's report clock): kept, and
   * told now; `why` is the event's message (default: the self-fence's).
   */
  fenced(vmId: string, at: number, why?: string): void;
  /** Tells every kept VM again, in order, stopping at the first message not sent. */
  flush(): void;
  /** An operation on `vmId` came: the control plane has taken it over; no longer told. */
  taken(vmId: string): void;
}

/**
 * Keeps the self-fenced VMs in memory and tells each as a `self-fenced`
 * event through `send` (false: no stream up, the message is dropped).
 * `onKept` hears every VM kept (a file keeps it too, for an agent started
 * again before it told), `onTaken` every VM taken over (the file drops it).
 */
export function createFencedVmReports(
  send: (m: MessageInitShape<typeof AgentMessageSchema>) => boolean,
  onTaken: (vmId: string) => void = () => {},
  onKept: (vmId: string) => void = () => {},
): FencedVmReports {
  const fencedVms = new Map<string, { at: number; why: string }>();
  const tellFenced = (vmId: string, at: number, why: string) =>
    send({
      kind: {
        case: "event",
        value: {
          kind: "self-fenced",
          vmId,
          message: why,
          at: { seconds: BigInt(Math.floor(at / 1000)), nanos: (at % 1000) * 1_000_000 },
        },
      },
    });
  return {
    fenced(vmId, at, why = SELF_FENCED) {
      fencedVms.set(vmId, { at, why });
      onKept(vmId);
      tellFenced(vmId, at, why);
    },
    flush() {
      for (const [vmId, { at, why }] of fencedVms) if (!tellFenced(vmId, at, why)) return;
    },
    taken(vmId) {
      fencedVms.delete(vmId);
      onTaken(vmId);
    },
  };
}

/** The message of a `self-fenced` event by default: the node's own clock stopped the VM. */
const SELF_FENCED = "hard-stopped: no confirmed lease renewal within the self-fence window";

/** The agent's log line when it tells the HA VMs a watchdog reset stopped. */
export const RESET_TOLD = "the watchdog reset the node; its HA vms are to run again";

/** The agent's log line when it tells the HA VMs its storage fenced off. */
export const FENCED_OFF_TOLD =
  "another node took the disks' locks of these HA vms, which stopped here; told as self-fenced";

/** The message of the `self-fenced` event of an HA VM its storage fenced off. */
export const FENCED_OFF = "hard-stopped: another node took its disks' locks";

/**
 * HA VMs stopped by something other than an operation, told as
 * self-fenced: the node's watchdog or a reboot of its host while no agent
 * ran (a simulated reset, carried out at the first hypervisor call after
 * the agent wakes or starts again; a boot id changed since the last run,
 * see host-boot.ts), or, in another one of these, its storage fencing
 * them off (another node took their disks' locks). Else nothing brings
 * them back when the node is READY again before any controller saw it
 * NOT_READY, or, fenced off while placed here (a late recover elsewhere
 * under an older generation than the VM's, the chaos test's seed 105), at
 * all. `stopped` is the hook; what comes before `tellTo` is kept until
 * then, each VM once (a simulated reboot is seen by both hooks of a reset).
 * `why` is the events' message (default the self-fence's).
 */
export function createResetHaVms(): {
  stopped(haVmIds: readonly string[]): void;
  tellTo(
    reports: FencedVmReports,
    now: () => number,
    logged: (ids: readonly string[]) => void,
    why?: string,
  ): void;
} {
  const pending: string[] = [];
  let tell = (ids: readonly string[]) => {
    for (const id of ids) if (!pending.includes(id)) pending.push(id);
  };
  return {
    stopped: (ids) => tell(ids),
    tellTo(reports, now, logged, why) {
      tell = (ids) => {
        if (ids.length === 0) return;
        logged(ids);
        for (const id of ids) reports.fenced(id, now(), why);
      };
      tell(pending.splice(0));
    },
  };
}
