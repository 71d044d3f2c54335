/**
 * The acts an audit intent (audit-intents.ts) can name, as stored and as
 * told: a stale copy's removal, and an HA VM's start on the node that
 * stopped it while cut off. An intent left with no outcome is told as
 * "unknown": its controller stopped between the act and its record.
 */
import type { AuditIntent } from "../gen/debvisor/store/v1/records_pb.js";
import type { FailoverDecision } from "./failover-decisions.js";
import type { StaleCopyDecision } from "./stale-copy-removal.js";

/** An act as its intent names it. */
export type IntendedAct =
  | ({ readonly kind: "staleCopyRemoval" } & Omit<
      StaleCopyDecision,
      "action" | "detail" | "requestId"
    >)
  | {
      readonly kind: "haStart";
      readonly vmId: string;
      readonly node: string;
      readonly tenant: string;
      /** The decision as told when it started ("started again on ..."). */
      readonly detail: string;
    };

/** What an act came to, as its actor knew it. */
export interface ActOutcome {
  /** As the act's decision says it: removed or failed; restarted or failed. */
  readonly action: string;
  readonly detail: string;
}

/** Where each kind of act is told (to the trail only); a kind without one is not kept. */
export interface ActTellers {
  readonly tellStaleCopy?: (d: StaleCopyDecision) => Promise<void> | void;
  readonly tellHaStart?: (d: FailoverDecision) => Promise<void> | void;
}

/** Whether `act`'s kind has somewhere to be told. */
export function canTell(act: IntendedAct, tellers: ActTellers): boolean {
  return (act.kind === "haStart" ? tellers.tellHaStart : tellers.tellStaleCopy) !== undefined;
}

/** The stored form of an act. */
export function storedAct(act: IntendedAct): AuditIntent["act"] {
  if (act.kind === "haStart")
    return {
      case: "haStart",
      value: {
        $typeName: "debvisor.store.v1.HaStartIntent",
        vmId: act.vmId,
        nodeId: act.node,
        tenant: act.tenant,
        detail: act.detail,
      },
    };
  return {
    case: "staleCopyRemoval",
    value: {
      $typeName: "debvisor.store.v1.StaleCopyRemovalIntent",
      vmId: act.vmId,
      nodeId: act.node,
      placedOn: act.placedOn,
      generation: act.generation,
      tenant: act.tenant,
    },
  };
}

/**
 * How an intent left is told: its recorded outcome, or "unknown";
 * undefined when nothing here can tell its kind (no trail for it, or a
 * newer version's kind).
 */
export function tellerOf(
  intent: AuditIntent,
  tellers: ActTellers,
  /** The act's id, told as its records' request id. */
  requestId: string,
  /** The outcome as this process knows it (its own act), if the intent has none. */
  known?: ActOutcome,
): (() => unknown) | undefined {
  const { act, runner } = intent;
  const outcome = intent.outcome === "" ? (known?.action ?? "") : intent.outcome;
  const detail = intent.outcome === "" ? (known?.detail ?? "") : intent.detail;
  const stopped = `control-plane process ${runner} did not record it told (it stopped, or a store write failed), so its outcome is not known`;
  if (act.case === "staleCopyRemoval" && tellers.tellStaleCopy !== undefined) {
    const tell = tellers.tellStaleCopy;
    const r = act.value;
    const d = {
      vmId: r.vmId,
      node: r.nodeId,
      placedOn: r.placedOn,
      generation: r.generation,
      tenant: r.tenant,
      requestId,
    };
    return outcome === "removed" || outcome === "failed" || (outcome === "unknown" && detail !== "")
      ? () => tell({ ...d, action: outcome, detail })
      : () =>
          tell({
            ...d,
            action: "unknown",
            detail: `removal of the stale copy on ${r.nodeId} sent; ${stopped}; while the copy is there, the vm shows a conflict`,
          });
  }
  if (act.case === "haStart" && tellers.tellHaStart !== undefined) {
    const tell = tellers.tellHaStart;
    const r = act.value;
    const d = { vmId: r.vmId, node: r.nodeId, tenant: r.tenant, requestId };
    return outcome === "restarted" ||
      outcome === "failed" ||
      (outcome === "unknown" && detail !== "")
      ? () => tell({ ...d, action: outcome, detail })
      : () =>
          tell({
            ...d,
            action: "unknown",
            detail: `${r.detail}: start sent; ${stopped}; the node's report shows whether it runs`,
          });
  }
  return undefined;
}
