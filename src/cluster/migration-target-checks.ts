/**
 * The checks of one migration or failover target: that it exists, is
 * another node, is ready, schedulable and has room, offers the VM's CPU,
 * reaches its storage, holds no stale copy, and whether the move can be
 * live. Each check carries its reason.
 */
import { nodeKey, sameNode } from "../core/index.js";
import { MIGRATION_URI_LABEL, migrationUriProblem } from "../drivers/index.js";
import { NodeReadiness, type NodeSummary } from "../gen/debvisor/v1/node_pb.js";
import { StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import { type VmInfo, VmState } from "../gen/debvisor/v1/vm_pb.js";
import type { Executors } from "./executors.js";
import { gib, type Reserved } from "./free-capacity.js";
import type { Check, PlanInput } from "./migration-planner.js";
import type { ReplicaTest } from "./replica-test.js";

/** What {@link createMigrationTargetChecks} works with. */
export interface MigrationTargetChecksDeps {
  readonly executors: Executors;
  /** What a node can still take: freeCapacity with the planner's overcommit ratios. */
  readonly free: (
    node: NodeSummary,
    reserved: ReadonlyMap<string, Reserved>,
  ) => { vcpus: number; memory: bigint };
}

/** Checks one target of a plan. */
export interface MigrationTargetChecks {
  /** The checks of moving `vm` from `source` to `target`. */
  checkTarget(
    input: PlanInput,
    source: NodeSummary,
    target: NodeSummary | undefined,
    targetId: string,
    replicaOf: ReplicaTest,
  ): Promise<{ checks: Check[]; live: boolean }>;
}

/** Creates the {@link MigrationTargetChecks}. */
export function createMigrationTargetChecks(
  deps: MigrationTargetChecksDeps,
): MigrationTargetChecks {
  const { executors, free } = deps;
  return {
    async checkTarget(input, source, target, targetId, replicaOf) {
      const { vm } = input;
      const sourceId = source.info?.id?.id ?? "";
      const checks: Check[] = [];
      const add = (name: string, passed: boolean, reason: string) =>
        checks.push({ name, passed, reason });
      if (target === undefined) {
        add("target_exists", false, `node ${targetId} is not registered`);
        return { checks, live: false };
      }
      add("target_exists", true, `node ${targetId} is registered`);
      add(
        "target_differs",
        !sameNode(targetId, sourceId),
        !sameNode(targetId, sourceId) ? "target is another node" : `vm already runs on ${targetId}`,
      );
      const ready = target.readiness === NodeReadiness.READY;
      add(
        "target_ready",
        ready,
        ready ? `${targetId} is ready` : `${targetId} is not ready (no recent heartbeat)`,
      );
      add(
        "target_schedulable",
        !target.cordoned,
        target.cordoned ? `${targetId} is cordoned` : `${targetId} is not cordoned`,
      );
      const room = free(target, input.reserved);
      const cpuFits = room.vcpus >= vm.vcpus;
      add(
        "target_cpu",
        cpuFits,
        input.confined
          ? `${targetId} has ${cpuFits ? "enough" : "not enough"} free vCPUs for the vm`
          : `${targetId} has ${Math.max(0, room.vcpus)} vCPUs free after reservations; vm needs ${vm.vcpus}`,
      );
      const memoryFits = room.memory >= vm.memoryBytes;
      add(
        "target_memory",
        memoryFits,
        input.confined
          ? `${targetId} has ${memoryFits ? "enough" : "not enough"} free memory for the vm`
          : `${targetId} has ${gib(room.memory)} free after reservations; vm needs ${gib(vm.memoryBytes)}`,
      );
      checks.push(cpuCheck(vm, source, target));
      checks.push(await storageCheck(vm, sourceId, target, replicaOf));
      if (input.failover) return { checks, live: false };
      // A stale copy there muddles the truth a dead runner's migration is settled from: one
      // with no removal sent would pass for the VM arrived (an old copy taken for the moved
      // VM), and one whose removal was sent keeps the arrived VM out of the target's report.
      const copyThere = input.copyNodes?.has(nodeKey(targetId)) ?? false;
      add(
        "target_holds_no_copy",
        !copyThere,
        copyThere
          ? `${targetId} holds a stale copy of the vm; it can be the target once the copy is gone`
          : `${targetId} holds no other copy of the vm`,
      );

      // A node's reported migration URI is acted on by the source's libvirt (agent-executors.ts).
      const uri = target.info?.labels[MIGRATION_URI_LABEL] ?? "";
      const uriProblem = uri === "" ? undefined : migrationUriProblem(uri);
      if (uriProblem !== undefined)
        add(
          "target_migration_uri",
          false,
          `${targetId} reported a migration URI no source may connect to: ${uriProblem}`,
        );

      const live = liveOrDowntime(input, source, target, sourceId, targetId, executors, add);
      return { checks, live };
    },
  };
}

/**
 * Whether the move can be live, told in the check `live_or_downtime`, then
 * whether both nodes have a hypervisor driver (`executors`).
 */
function liveOrDowntime(
  input: PlanInput,
  source: NodeSummary,
  target: NodeSummary,
  sourceId: string,
  targetId: string,
  executors: Executors,
  add: (name: string, passed: boolean, reason: string) => void,
): boolean {
  const { vm } = input;
  const running = vm.state === VmState.RUNNING;
  const srcDriver = executors.forNode(sourceId);
  const dstDriver = executors.forNode(targetId);
  const blockers: string[] = [];
  if (!vm.liveMigratable) blockers.push("the vm has passthrough devices or local state");
  if (source.info?.liveMigrationDisabled) blockers.push(`${sourceId} refuses live migration`);
  if (target.info?.liveMigrationDisabled) blockers.push(`${targetId} refuses live migration`);
  if (srcDriver !== undefined && !srcDriver.capabilities.liveMigration)
    blockers.push(`${srcDriver.kind} on ${sourceId} cannot migrate live`);
  if (dstDriver !== undefined && !dstDriver.capabilities.liveMigration)
    blockers.push(`${dstDriver.kind} on ${targetId} cannot migrate live`);
  const live = running && blockers.length === 0;
  if (!running) add("live_or_downtime", true, "vm is not running: moved stopped");
  else if (live) add("live_or_downtime", true, "live migration: the vm keeps running");
  else if (input.allowDowntime)
    add("live_or_downtime", true, `moved stopped (allow_downtime): ${blockers.join("; ")}`);
  else
    add(
      "live_or_downtime",
      false,
      `cannot migrate live: ${blockers.join("; ")}; allow_downtime would move it stopped`,
    );
  const hasExecutors = srcDriver !== undefined && dstDriver !== undefined;
  add(
    "executors",
    hasExecutors,
    hasExecutors
      ? "both nodes have a hypervisor driver"
      : `no hypervisor driver for ${srcDriver === undefined ? sourceId : targetId}`,
  );
  return live;
}

function cpuCheck(vm: VmInfo, source: NodeSummary, target: NodeSummary): Check {
  const model = vm.cpuModel;
  const tId = target.info?.id?.id ?? "";
  const tHost = target.info?.cpuModel ?? "";
  const sHost = source.info?.cpuModel ?? "";
  if (model === "host-passthrough") {
    const ok = tHost !== "" && tHost === sHost;
    return {
      name: "cpu_compatible",
      passed: ok,
      reason: ok
        ? `host-passthrough vm and both hosts are ${tHost}`
        : `host-passthrough vm needs host CPU ${sHost || "(unknown)"}; ${tId} has ${tHost || "(unknown)"}`,
    };
  }
  if (model === "" || model === "host-model") {
    const ok = sHost === "" || tHost === sHost || (target.info?.cpuModels ?? []).includes(sHost);
    return {
      name: "cpu_compatible",
      passed: ok,
      reason: ok
        ? `host-model vm can run on ${tId} (${tHost || "unknown host CPU"})`
        : `host-model vm started on ${sHost}; ${tId} (${tHost}) does not offer it`,
    };
  }
  const ok = (target.info?.cpuModels ?? []).includes(model) || tHost === model;
  return {
    name: "cpu_compatible",
    passed: ok,
    reason: ok ? `${tId} offers CPU model ${model}` : `${tId} does not offer CPU model ${model}`,
  };
}

async function storageCheck(
  vm: VmInfo,
  sourceId: string,
  target: NodeSummary,
  hasReplica: ReplicaTest,
): Promise<Check> {
  const tId = target.info?.id?.id ?? "";
  const pools = target.info?.sharedPools ?? [];
  for (const disk of vm.disks) {
    const name = `${disk.pool}/${disk.name}`;
    if (disk.backend === StorageBackend.BACKEND_RBD) {
      if (!pools.includes(disk.pool))
        return {
          name: "storage_reachable",
          passed: false,
          reason: `${tId} does not reach RBD pool ${disk.pool} (disk ${name})`,
        };
    } else if (disk.backend === StorageBackend.BACKEND_ZFS) {
      if (!(await hasReplica(disk, tId)))
        return {
          name: "storage_reachable",
          passed: false,
          reason: `ZFS dataset ${name} is local to ${sourceId} and has no replica on ${tId}; plan a ZFS replication first`,
        };
    } else {
      return {
        name: "storage_reachable",
        passed: false,
        reason: `disk ${name} has no known storage backend`,
      };
    }
  }
  return {
    name: "storage_reachable",
    passed: true,
    reason:
      vm.disks.length === 0
        ? "vm has no disks"
        : `every disk is on shared RBD or replicated to ${tId}`,
  };
}
