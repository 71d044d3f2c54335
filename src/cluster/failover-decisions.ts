/**
 * The failover controller's decisions as they are told: logged once per
 * change (a decision repeated pass after pass is not told again), handed to
 * the audit trail's callbacks and emitted as the VM's events.
 */
import { type Clock, createRecencyMap, type Logger } from "../core/index.js";
import type { Migration } from "../gen/debvisor/v1/migration_pb.js";
import type { EventSink } from "./event-recorder.js";
import type { AdoptedPlacement } from "./placement-from-truth.js";
import type { StaleCopyDecision } from "./stale-copy-removal.js";

/** One decision of the controller, for logs and the audit trail. */
export interface FailoverDecision {
  readonly vmId: string;
  readonly node: string;
  /**
   * adopted: its placement moved to the only node holding it
   * (placement-from-truth.ts); unknown: a start whose controller stopped
   * before telling its outcome (audit-intents.ts).
   */
  readonly action: "restarted" | "skipped" | "failed" | "adopted" | "unknown";
  readonly detail: string;
  /**
   * The error's code, for a failure: what tells one failure from the next.
   * Its message is not (an agent words its own, and could make every pass's
   * failure new).
   */
  readonly reason?: string;
  readonly migrationId?: string;
  /** An act's id without a migration (an HA start's audit intent): the audit record's request id. */
  readonly requestId?: string;
  /** The VM's tenant, for its events and its audit record (a tenant's auditors see it). */
  readonly tenant: string;
}

/**
 * The decision a failover controller's restart that succeeded was, from its
 * record: told by a reconcile pass when its controller died before telling
 * it (migration-settle-tell.ts), as the controller tells it.
 */
export function restartDecisionOf(m: Migration, tenant: string): FailoverDecision {
  const target = m.target?.nodeId?.id ?? "";
  return {
    vmId: m.vm?.vmId ?? "",
    node: m.source?.nodeId?.id ?? "",
    tenant,
    action: "restarted",
    detail: `restarted on ${target}`,
    migrationId: m.migrationId,
  };
}

/** What {@link createFailoverDecisions} works with. */
export interface FailoverDecisionsDeps {
  readonly logger: Logger;
  /** When a failure was told, for {@link FAILURE_QUIET_MS} (default: the system clock). */
  readonly clock?: Clock;
  /** Resolves once the decision is in the audit trail (a rejection is logged here). */
  readonly onDecision?: (decision: FailoverDecision) => Promise<void> | void;
  readonly onStaleCopy?: (decision: StaleCopyDecision) => Promise<void> | void;
  readonly events?: EventSink;
}

/** Where the controller and its parts tell what they decided. */
export interface FailoverDecisions {
  /**
   * A restart, skip, failure or adoption of one VM; a skip or failure told
   * when it differs from the VM's last one. Resolves once `onDecision` took
   * it (true), or at once when it was not told, a repeat (false); rejects
   * when the trail refused it (logged here: a caller may leave it).
   */
  decide(d: FailoverDecision): Promise<boolean>;
  /**
   * A stale copy of a VM removed, or not. Resolves once `onStaleCopy` took
   * it; rejects when it refused it (logged here: a caller may leave it).
   */
  staleCopy(d: StaleCopyDecision): Promise<void>;
  /** A placement moved to the only node holding the VM. */
  adopted(d: AdoptedPlacement): void;
}

/** VMs whose last failover decision is remembered (a repeat of it is not told again). */
const REMEMBERED_DECISIONS = 10_000;

/**
 * After a failure of a VM is told, another failure of it (with another code)
 * waits this long to be told. A node that fails a restart every pass with a
 * different answer would otherwise write a log line, an event and an audit
 * record per pass, every 2 s, for as long as it likes.
 */
export const FAILURE_QUIET_MS = 60_000;

/** Creates the {@link FailoverDecisions}. */
export function createFailoverDecisions(deps: FailoverDecisionsDeps): FailoverDecisions {
  const { logger } = deps;
  const now = () => (deps.clock === undefined ? Date.now() : deps.clock.now());
  /** The last decision told per VM, so a pass repeating it says nothing; the oldest forgotten past the bound. */
  const lastDecision = createRecencyMap<string, { key: string; failed: boolean; at: number }>(
    REMEMBERED_DECISIONS,
  );

  function decide(d: FailoverDecision) {
    const key = d.reason === undefined ? `${d.action}:${d.detail}` : `${d.action}#${d.reason}`;
    const last = lastDecision.get(d.vmId);
    // Only what was not done repeats: each restart and adoption is told, or a VM restarted
    // again (its node fenced it a second time) had one audit record for two starts.
    if (last?.key === key && (d.action === "skipped" || d.action === "failed"))
      return Promise.resolve(false);
    const at = now();
    if (d.action === "failed" && last?.failed === true && at - last.at < FAILURE_QUIET_MS)
      return Promise.resolve(false);
    // Deleted VMs' entries would stay for the process's life: the least recently decided go.
    lastDecision.touch(d.vmId, { key, failed: d.action === "failed", at });
    logger.info({ ...d }, "failover decision");
    // Called now (a throw is a rejection): the trail hears decisions in their order.
    const told = (async () => deps.onDecision?.(d))();
    told.catch((err: unknown) => logger.error({ err }, "failover decision not audited"));
    // Restarts and failures are told by failoverVm itself, with the VM's tenant.
    if (d.action === "skipped")
      deps.events?.emit({
        kind: "vm",
        id: d.vmId,
        tenant: d.tenant,
        type: "FailoverSkipped",
        message: `not restarted (its node ${d.node}): ${d.detail}`,
        warning: true,
        source: "failover-controller",
      });
    return told.then(() => true);
  }

  return {
    decide,
    staleCopy(d) {
      logger.info({ ...d, generation: String(d.generation) }, "stale copy of a vm");
      const told = (async () => deps.onStaleCopy?.(d))();
      told.catch((err: unknown) => logger.error({ err }, "stale copy removal not audited"));
      deps.events?.emit({
        kind: "vm",
        id: d.vmId,
        type: d.action === "removed" ? "StaleCopyRemoved" : "StaleCopyNotRemoved",
        message: d.detail,
        warning: d.action !== "removed",
        source: "failover-controller",
      });
      return told;
    },
    adopted(d) {
      const detail = `placed on ${d.to} (generation ${d.generation}), the only node holding it: ${d.from} no longer does${d.marked ? "; to start again if HA" : ""}`;
      void decide({ vmId: d.vmId, node: d.to, tenant: d.tenant, action: "adopted", detail });
      deps.events?.emit({
        kind: "vm",
        id: d.vmId,
        tenant: d.tenant,
        type: "PlacementAdopted",
        message: detail,
        warning: true,
        source: "failover-controller",
      });
    },
  };
}
