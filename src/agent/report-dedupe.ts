import { clone, create } from "@bufbuild/protobuf";
import { sameValue } from "../core/index.js";
import { type AgentMessage, AgentMessageSchema } from "../gen/debvisor/v1/agent_pb.js";
import { type VmInfo, VmInfoSchema } from "../gen/debvisor/v1/vm_pb.js";

/** What {@link createReportDedupe} returns: one per stream. */
export interface ReportDedupe {
  /** The server's Welcome said whether it takes heartbeats with vms_unchanged. */
  accepted(yes: boolean): void;
  /** The message to send for `m`: a heartbeat repeating the last VM list goes without it. */
  outgoing(m: AgentMessage): AgentMessage;
}

/**
 * One stream's heartbeats without repeated VM lists: once the server has
 * said it takes them (its Welcome), a heartbeat whose VMs equal those of the
 * stream's last report that listed them (the Hello's, at first) carries
 * none and sets vms_unchanged. A new stream starts from its own Hello.
 */
export function createReportDedupe(): ReportDedupe {
  let listed: VmInfo[] | undefined;
  let accepts = false;
  return {
    accepted(yes: boolean) {
      accepts = yes;
    },
    outgoing(m: AgentMessage): AgentMessage {
      const k = m.kind;
      if (k.case === "hello") listed = snapshot(k.value.health?.vms);
      if (k.case !== "heartbeat" || k.value.health === undefined) return m;
      const { health } = k.value;
      if (!accepts || listed === undefined || !sameValue(health.vms, listed)) {
        listed = snapshot(health.vms);
        return m;
      }
      // New objects: the report's may be shared with whoever built it.
      return create(AgentMessageSchema, {
        kind: {
          case: "heartbeat",
          value: { ...k.value, health: { ...health, vms: [] }, vmsUnchanged: true },
        },
      });
    },
  };
}

/**
 * A copy of the VMs as sent: the report's objects may be a driver's own,
 * which it could change in place later; compared with those, a changed VM
 * would equal "the last list" and never be sent again.
 */
function snapshot(vms: VmInfo[] | undefined): VmInfo[] | undefined {
  return vms?.map((vm) => clone(VmInfoSchema, vm));
}
