import type { Clock, Logger } from "../core/index.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import { type BucketLimit, createRateLimiter } from "../security/index.js";
import { MAX_CLAIMS } from "./report-placement.js";
import type { VmFacts } from "./vm-records.js";

/**
 * How many VMs no record holds one node's reports may claim: as many as
 * one report may list at once (1,000: a node joining with its VMs), then
 * 1,000 a day. A record so claimed is written on the node's word alone: a
 * stolen node certificate reporting fresh made-up ids in every heartbeat
 * wrote 50 records a report, about 5,000 a second at its stream's message
 * rate, and a "Placed" event each (an adversarial review, 8 December 2026).
 */
export const FIRST_CLAIMS: BucketLimit = { ratePerSecond: 1000 / 86_400, burst: 1000 };

/** The claims one report may make of VMs no record holds, and which of them cost a token. */
export interface FirstClaimsTaken {
  readonly allowed: ReadonlySet<string>;
  readonly charged: readonly string[];
}

/**
 * The budget of each node's claims of VMs no record holds (in this process:
 * each control-plane replica counts its own). `take` asks before a report
 * is placed, at most {@link MAX_CLAIMS}, for the report's VMs no record
 * holds; a node past its budget has the rest left out of its report (as
 * past MAX_CLAIMS), logged once a minute per node. `settle` gives back the
 * tokens of those the report did not claim after all (it was older than
 * the stored one, or repeated it, or the claims bound was full; found by a
 * review of the budget).
 */
export function createFirstClaims(clock: Clock, logger: Logger | undefined) {
  const budgets = createRateLimiter(clock, 10_000);
  const logged = createRateLimiter(clock, 10_000);
  return {
    take(nodeId: string, vms: readonly VmInfo[], facts: VmFacts): FirstClaimsTaken {
      const allowed = new Set<string>();
      const charged: string[] = [];
      let unknown = 0;
      for (const vm of vms) {
        if (facts.get(vm.id) !== undefined || allowed.size >= MAX_CLAIMS) continue;
        unknown++;
        if (budgets.take(nodeId, 1, FIRST_CLAIMS).allowed) {
          allowed.add(vm.id);
          charged.push(vm.id);
        }
      }
      if (allowed.size < Math.min(unknown, MAX_CLAIMS)) {
        if (logged.take(nodeId, 1, { ratePerSecond: 1 / 60, burst: 1 }).allowed)
          logger?.warn(
            { node: nodeId, unknown, claimed: allowed.size },
            "a node reports more VMs no record holds than it may claim now; the rest are left out of its report",
          );
      }
      return { allowed, charged };
    },
    settle(nodeId: string, taken: FirstClaimsTaken, claimed: ReadonlySet<string>): void {
      const unused = taken.charged.filter((id) => !claimed.has(id)).length;
      if (unused > 0) budgets.giveBack(nodeId, unused, FIRST_CLAIMS);
    },
  };
}
