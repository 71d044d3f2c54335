/**
 * The target of a migration or failover asked with none: every other node
 * is checked (but those the caller said to avoid), those passing every
 * check are kept, and the one with the most free memory (then vCPUs, then
 * name) is taken.
 */
import { nodeKey, sameNode } from "../core/index.js";
import type { NodeSummary } from "../gen/debvisor/v1/node_pb.js";
import { gib, passingNodes } from "./free-capacity.js";
import type { Check, Plan, PlanInput } from "./migration-planner.js";
import type {
  MigrationTargetChecks,
  MigrationTargetChecksDeps,
} from "./migration-target-checks.js";
import type { ReplicaTest } from "./replica-test.js";

/** The plan with the roomiest passing target, or refused with the first reasons of up to 5 nodes. */
export async function pickMigrationTarget(
  input: PlanInput,
  source: NodeSummary,
  sourceId: string,
  head: Check[],
  replicaOf: ReplicaTest,
  targets: MigrationTargetChecks,
  free: MigrationTargetChecksDeps["free"],
): Promise<Plan> {
  // No target given: try every other node, keep those passing, take the roomiest.
  const passing: { id: string; live: boolean; checks: Check[]; mem: bigint; cpu: number }[] = [];
  const refusals: string[] = [];
  for (const node of input.nodes) {
    const id = node.info?.id?.id ?? "";
    if (sameNode(id, sourceId)) continue;
    const avoided = input.avoid?.get(nodeKey(id));
    if (avoided !== undefined) {
      if (refusals.length < 5) refusals.push(`${id}: ${avoided}`);
      continue;
    }
    const { checks, live } = await targets.checkTarget(input, source, node, id, replicaOf);
    const failed = checks.find((c) => !c.passed);
    if (failed === undefined) {
      const room = free(node, input.reserved);
      passing.push({ id, live, checks, mem: room.memory, cpu: room.vcpus });
    } else if (refusals.length < 5) refusals.push(`${id}: ${failed.reason}`);
  }
  if (passing.length === 0) return refuseWith(head, refusals, input.nodes.length - 1);
  passing.sort((a, b) =>
    a.mem !== b.mem ? (a.mem > b.mem ? -1 : 1) : b.cpu - a.cpu || (a.id < b.id ? -1 : 1),
  );
  const best = passing[0];
  if (best === undefined) throw new TypeError("unreachable");
  const all = [...head, ...best.checks];
  return {
    allowed: all.every((c) => c.passed),
    checks: all,
    source: sourceId,
    target: best.id,
    targetReason: `most free memory after reservations${input.confined ? "" : ` (${gib(best.mem)}, ${best.cpu} vCPUs free)`} of ${passingNodes(passing.length)}`,
    live: best.live,
  };

  function refuseWith(h: Check[], why: string[], others: number): Plan {
    return {
      allowed: false,
      checks: [
        ...h,
        {
          name: "target",
          passed: false,
          reason:
            others <= 0
              ? "no other node in the cluster"
              : `none of ${others} other nodes passes every check: ${why.join("; ")}`,
        },
      ],
      source: sourceId,
      target: "",
      targetReason: "",
      live: false,
    };
  }
}
