/**
 * The migration planner: plans migrations and failovers, every check with
 * its reason, and picks a target when none is given. The checks of a target
 * are in migration-target-checks.ts, the pick in pick-migration-target.ts,
 * free capacity in free-capacity.ts.
 */
import { nodeKey, sameNode } from "../core/index.js";
import { NodeReadiness, type NodeSummary } from "../gen/debvisor/v1/node_pb.js";
import type { DatasetRef } from "../gen/debvisor/v1/storage_pb.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import type { Executors } from "./executors.js";
import { freeCapacity, type Reserved } from "./free-capacity.js";
import { createMigrationTargetChecks } from "./migration-target-checks.js";
import { pickMigrationTarget } from "./pick-migration-target.js";
import { replicaTest } from "./replica-test.js";

export type { Reserved } from "./free-capacity.js";

/** Whether a ZFS dataset has a replica on a node (kept by ZFS replication jobs). */
export interface ReplicaLookup {
  hasReplica(dataset: DatasetRef, nodeId: string, signal?: AbortSignal): Promise<boolean>;
  /** Every node holding a copy: when present, asked once per plan instead of once per candidate. */
  replicasOf?(dataset: DatasetRef, signal?: AbortSignal): Promise<readonly { nodeId: string }[]>;
}

/** A catalogue that knows no replicas: ZFS datasets stay where they are. */
export const NO_REPLICAS: ReplicaLookup = { hasReplica: async () => false };

/** One check of a plan. */
export interface Check {
  readonly name: string;
  readonly passed: boolean;
  readonly reason: string;
}

/** What planning looks at, read once per plan. */
export interface PlanInput {
  readonly vm: VmInfo;
  readonly nodes: readonly NodeSummary[];
  readonly reserved: ReadonlyMap<string, Reserved>;
  /** True when another migration or failover of the VM holds its lock. */
  readonly inFlight: boolean;
  /**
   * A lifecycle operation on the VM (start, stop, reboot, delete) that has
   * no outcome yet, by id: a migration is refused until it has one (a
   * failover is not: its node is down, and the fence refuses the operation
   * there). Moved meanwhile, the VM would leave the node the operation is
   * sent to: a start would fail there, the VM arriving stopped with its
   * desired state RUNNING.
   */
  readonly pendingOperation?: string;
  /** Source the caller expects, if any. */
  readonly source?: string;
  /** Target the caller asked for; empty or undefined: pick one. */
  readonly target?: string;
  readonly allowDowntime: boolean;
  /** Failover: the source is down, the VM is restarted, not migrated. */
  readonly failover?: boolean;
  /** Nodes (keys) the VM's record names as holding a stale copy: never a migration's target. */
  readonly copyNodes?: ReadonlySet<string>;
  /**
   * Nodes (keys) not to pick when no target is given (a failover's target
   * that failed to restart the VM a moment ago), with the reason to give.
   */
  readonly avoid?: ReadonlyMap<string, string>;
  /**
   * The reasons go to a caller confined to a tenant (default false): they say
   * in words whether a node has room, never its free vCPUs or memory, which
   * are what every tenant's VMs leave.
   */
  readonly confined?: boolean;
}

/** The outcome of planning. */
export interface Plan {
  readonly allowed: boolean;
  readonly checks: readonly Check[];
  readonly source: string;
  readonly target: string;
  /** Why this target, when the planner picked it. */
  readonly targetReason: string;
  readonly live: boolean;
}

/** Options of {@link createPlanner}. */
export interface PlannerOptions {
  readonly executors: Executors;
  readonly replicas: ReplicaLookup;
  /** vCPUs placeable per physical core (default 4). */
  readonly cpuOvercommit?: number;
  /** Memory placeable per byte of RAM (default 1: no overcommit). */
  readonly memoryOvercommit?: number;
}

/** Plans migrations and failovers: every check with its reason, and a target when none is given. */
export interface Planner {
  plan(input: PlanInput, signal?: AbortSignal): Promise<Plan>;
}

/** Creates a {@link Planner}. */
export function createPlanner(options: PlannerOptions): Planner {
  const cpuOvercommit = options.cpuOvercommit ?? 4;
  const memOvercommit = options.memoryOvercommit ?? 1;

  const free = (node: NodeSummary, reserved: ReadonlyMap<string, Reserved>) =>
    freeCapacity(node, reserved, cpuOvercommit, memOvercommit);

  const targets = createMigrationTargetChecks({ executors: options.executors, free });

  return {
    async plan(input, signal) {
      const { vm } = input;
      const replicaOf = await replicaTest(vm, options.replicas, signal);
      const byId = new Map(input.nodes.map((n) => [nodeKey(n.info?.id?.id ?? ""), n]));
      const source = byId.get(nodeKey(vm.nodeId?.id ?? ""));
      const sourceId = source?.info?.id?.id ?? vm.nodeId?.id ?? "";
      const head: Check[] = [{ name: "vm_exists", passed: true, reason: `vm ${vm.id} is known` }];
      const refuse = (extra: Check[]): Plan => ({
        allowed: false,
        checks: [...head, ...extra],
        source: sourceId,
        target: input.target ?? "",
        targetReason: "",
        live: false,
      });
      if (input.source !== undefined && input.source !== "" && !sameNode(input.source, sourceId)) {
        return refuse([
          { name: "source", passed: false, reason: `vm runs on ${sourceId}, not ${input.source}` },
        ]);
      }
      head.push({ name: "source", passed: true, reason: `vm runs on ${sourceId}` });
      if (source === undefined) {
        return refuse([{ name: "source_known", passed: false, reason: "source node is unknown" }]);
      }
      const sourceReady = source.readiness === NodeReadiness.READY;
      if (input.failover) {
        head.push({
          name: "source_down",
          passed: !sourceReady,
          reason: sourceReady ? `${sourceId} is ready` : `${sourceId} is not ready`,
        });
      } else {
        head.push({
          name: "source_ready",
          passed: sourceReady,
          reason: sourceReady
            ? `${sourceId} is ready`
            : `${sourceId} is not ready: use failover once it is fenced`,
        });
      }
      head.push({
        name: "no_migration_in_flight",
        passed: !input.inFlight,
        reason: input.inFlight
          ? "another migration or failover of this vm is in flight"
          : "no other migration or failover of this vm",
      });
      if (!input.failover) {
        const op = input.pendingOperation;
        head.push({
          name: "no_operation_in_flight",
          passed: op === undefined,
          reason:
            op === undefined
              ? "no operation on this vm waits for its outcome"
              : `operation ${op} on this vm has no outcome yet: wait for it`,
        });
      }

      if (input.target !== undefined && input.target !== "") {
        // The registered node's own spelling from here on: `Node-02` is `node-02`.
        const target = byId.get(nodeKey(input.target));
        const targetId = target?.info?.id?.id ?? input.target;
        const { checks, live } = await targets.checkTarget(
          input,
          source,
          target,
          targetId,
          replicaOf,
        );
        const all = [...head, ...checks];
        return {
          allowed: all.every((c) => c.passed),
          checks: all,
          source: sourceId,
          target: targetId,
          targetReason: "requested",
          live,
        };
      }

      // No target given: every other node is tried (pick-migration-target.ts).
      return pickMigrationTarget(input, source, sourceId, head, replicaOf, targets, free);
    },
  };
}
