import type { Clock, Logger } from "../core/index.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import { type BucketLimit, createRateLimiter } from "../security/index.js";
import { MAX_CLAIMS } from "./report-placement.js";
import type { VmFacts } from "./vm-records.js";

/**
 * How many VMs no record holds one node's reports may claim: as many as
 * one report may list at once (1,000: a node joining with its VMs), then
 * 1,000 a day. A record so claimed is written on the node's word alone and
 * stays (only a DeleteVm removes it): a stolen node certificate reporting
 * fresh made-up ids in every heartbeat wrote 50 records a report, about
 * 5,000 a second at its stream's message rate, and a "Placed" event each
 * (an adversarial review, 8 December 2026).
 */
export const FIRST_CLAIMS: BucketLimit = { ratePerSecond: 1000 / 86_400, burst: 1000 };

/**
 * The budget of each report's claims of VMs no record holds, per node (in
 * this process: each control-plane replica counts its own). Tokens are taken
 * before the report is placed, at most {@link MAX_CLAIMS}, for the VMs of
 * the report no record holds; a node past its budget has them left out of
 * its report (as past MAX_CLAIMS), logged once a minute per node.
 */
export function createFirstClaims(clock: Clock, logger: Logger | undefined) {
  const budgets = createRateLimiter(clock, 10_000);
  const logged = createRateLimiter(clock, 10_000);
  return (nodeId: string, vms: readonly VmInfo[], facts: VmFacts): number => {
    let unknown = 0;
    for (const vm of vms) if (facts.get(vm.id) === undefined) unknown++;
    const wanted = Math.min(unknown, MAX_CLAIMS);
    let budget = 0;
    while (budget < wanted && budgets.take(nodeId, 1, FIRST_CLAIMS).allowed) budget++;
    if (budget < wanted && logged.take(nodeId, 1, { ratePerSecond: 1 / 60, burst: 1 }).allowed)
      logger?.warn(
        { node: nodeId, unknown, claimed: budget },
        "a node reports more VMs no record holds than it may claim now; the rest are left out of its report",
      );
    return budget;
  };
}
