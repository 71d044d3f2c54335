import { nodeKey, sameNode } from "../core/index.js";
import { MIGRATION_URI_LABEL, migrationUriProblem } from "../drivers/index.js";
import { NodeReadiness, type NodeSummary } from "../gen/debvisor/v1/node_pb.js";
import { type DatasetRef, StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import { type VmInfo, VmState } from "../gen/debvisor/v1/vm_pb.js";
import type { Executors } from "./executors.js";

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

/** Capacity in use by in-flight migrations on a node. */
export interface Reserved {
  readonly vcpus: number;
  readonly memoryBytes: bigint;
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

const GIB = 1024 ** 3;

/**
 * What a node can still take: its capacity times the overcommit ratios,
 * minus what its VMs use and what in-flight migrations reserved on it.
 */
export function freeCapacity(
  node: NodeSummary,
  reserved: ReadonlyMap<string, Reserved>,
  cpuOvercommit: number,
  memOvercommit: number,
): { vcpus: number; memory: bigint } {
  const id = node.info?.id?.id ?? "";
  const r = reserved.get(id);
  const cores = node.info?.capacity?.cpuCores ?? 0;
  const mem = node.info?.capacity?.memoryBytes ?? 0n;
  return {
    vcpus: Math.floor(cores * cpuOvercommit) - node.vcpusAllocated - (r?.vcpus ?? 0),
    memory:
      BigInt(Math.floor(Number(mem) * memOvercommit)) -
      node.memoryAllocatedBytes -
      (r?.memoryBytes ?? 0n),
  };
}

/** Creates a {@link Planner}. */
export function createPlanner(options: PlannerOptions): Planner {
  const cpuOvercommit = options.cpuOvercommit ?? 4;
  const memOvercommit = options.memoryOvercommit ?? 1;

  const free = (node: NodeSummary, reserved: ReadonlyMap<string, Reserved>) =>
    freeCapacity(node, reserved, cpuOvercommit, memOvercommit);

  /** The checks of moving `vm` from `source` to `target`. */
  async function checkTarget(
    input: PlanInput,
    source: NodeSummary,
    target: NodeSummary | undefined,
    targetId: string,
    replicaOf: ReplicaTest,
  ): Promise<{ checks: Check[]; live: boolean }> {
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

    const running = vm.state === VmState.RUNNING;
    const srcDriver = options.executors.forNode(sourceId);
    const dstDriver = options.executors.forNode(targetId);
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
    return { checks, live };
  }

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
        const { checks, live } = await checkTarget(input, source, target, targetId, replicaOf);
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

      // No target given: try every other node, keep those passing, take the roomiest.
      const passing: { id: string; live: boolean; checks: Check[]; mem: bigint; cpu: number }[] =
        [];
      const refusals: string[] = [];
      for (const node of input.nodes) {
        const id = node.info?.id?.id ?? "";
        if (sameNode(id, sourceId)) continue;
        const { checks, live } = await checkTarget(input, source, node, id, replicaOf);
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
    },
  };
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

/** Whether a ZFS disk has a copy on a node. */
type ReplicaTest = (disk: DatasetRef, nodeId: string) => Promise<boolean>;

/** The replica test of one plan: the catalogue asked once per disk when it can list copies. */
async function replicaTest(
  vm: VmInfo,
  replicas: ReplicaLookup,
  signal: AbortSignal | undefined,
): Promise<ReplicaTest> {
  const list = replicas.replicasOf?.bind(replicas);
  if (list === undefined) return (disk, nodeId) => replicas.hasReplica(disk, nodeId, signal);
  const byDisk = new Map<DatasetRef, Set<string>>();
  for (const disk of vm.disks) {
    if (disk.backend === StorageBackend.BACKEND_ZFS)
      byDisk.set(disk, new Set((await list(disk, signal)).map((r) => r.nodeId)));
  }
  return async (disk, nodeId) => byDisk.get(disk)?.has(nodeId) ?? false;
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

/** "1 node that passes every check", "3 nodes that pass every check". */
export function passingNodes(n: number): string {
  return n === 1 ? "1 node that passes every check" : `${n} nodes that pass every check`;
}

/** Bytes as GiB with one decimal, for reasons and event messages. */
export function gib(bytes: bigint): string {
  return `${(Number(bytes) / GIB).toFixed(1)} GiB`;
}
