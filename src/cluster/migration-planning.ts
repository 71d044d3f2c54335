/**
 * Planning one migration for a caller: the VM as the caller may see it,
 * the cluster read for the planner (nodes, reservations, locks, the VM's
 * record and its last lifecycle operation), and the revisions that the
 * engine's begin compares so that nothing it planned from changed since.
 * Built once by `createMigrationEngine`.
 */
import { nodeKey } from "../core/index.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import type { Inventory } from "./inventory.js";
import type { MigrationRequest } from "./migration-engine.js";
import type { Plan, Planner } from "./migration-planner.js";
import type { MigrationRecords } from "./migration-records.js";
import { visibleTo } from "./tenancy.js";
import type { VmOperations } from "./vm-operations.js";

/** What {@link createMigrationPlanning} reads. */
export interface MigrationPlanningDeps {
  readonly inventory: Inventory;
  readonly planner: Planner;
  readonly records: MigrationRecords;
  readonly operations: Pick<VmOperations, "inFlight">;
}

/** A plan with what it was made from. */
export interface PlannedMigration {
  readonly plan: Plan;
  /** The VM, undefined when the caller may not see it (or it does not exist). */
  readonly vm: VmInfo | undefined;
  /** The reservations' revisions per target node, as read to plan. */
  readonly revisions: ReadonlyMap<string, number>;
  /** The revision of the VM's record as read to plan (0: none). */
  readonly recordRevision: number;
}

/** Plans migrations. */
export interface MigrationPlanning {
  /** Plans a migration for a caller; a VM the caller may not see plans like a missing one. */
  planFor(
    req: Omit<MigrationRequest, "kind" | "requestedBy">,
    signal?: AbortSignal,
    failover?: boolean,
    avoid?: ReadonlyMap<string, string>,
  ): Promise<PlannedMigration>;
}

/** Creates the {@link MigrationPlanning} over `deps`. */
export function createMigrationPlanning(deps: MigrationPlanningDeps): MigrationPlanning {
  const { inventory, planner, records } = deps;

  async function planFor(
    req: Omit<MigrationRequest, "kind" | "requestedBy">,
    signal?: AbortSignal,
    failover = false,
    avoid?: ReadonlyMap<string, string>,
  ): Promise<PlannedMigration> {
    const found = await inventory.findVm(req.vmId, signal);
    const vm = found !== undefined && visibleTo(found, req.tenant) ? found : undefined;
    if (vm === undefined) {
      return {
        plan: {
          allowed: false,
          checks: [{ name: "vm_exists", passed: false, reason: `vm ${req.vmId} not found` }],
          source: "",
          target: req.target ?? "",
          targetReason: "",
          live: false,
        } satisfies Plan,
        vm: undefined,
        revisions: new Map<string, number>(),
        recordRevision: 0,
      };
    }
    const [nodes, reserved, inFlight, facts] = await Promise.all([
      inventory.listNodes(signal),
      records.reserved(signal),
      records.locked(vm.id, signal),
      inventory.vmRecords.all(),
    ]);
    const record = facts.get(vm.id);
    // Only one sent to where the VM is: one stranded on a node it was failed over from never
    // runs there (its generation is stale), and must not hold up every later migration.
    const lastOperation = failover ? "" : (record?.rec.lastOperationId ?? "");
    const placed = record?.rec.nodeId || (vm.nodeId?.id ?? "");
    const pending = (await deps.operations.inFlight(lastOperation, placed, signal))
      ? lastOperation
      : undefined;
    const plan = await planner.plan(
      {
        vm,
        nodes,
        reserved: reserved.byNode,
        inFlight,
        pendingOperation: pending,
        source: req.source,
        target: req.target,
        allowDowntime: req.allowDowntime,
        failover,
        copyNodes: new Set((record?.rec.staleCopies ?? []).map((c) => nodeKey(c.nodeId))),
        avoid,
        // A failover's reasons go to the VM's events and record, which its tenant reads.
        confined: req.tenant !== undefined || failover,
      },
      signal,
    );
    return { plan, vm, revisions: reserved.revisions, recordRevision: record?.rev ?? 0 };
  }

  return { planFor };
}
