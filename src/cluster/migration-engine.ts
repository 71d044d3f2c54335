import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { clone, create } from "@bufbuild/protobuf";
import { abortError, type Clock, type Logger, RpcError, toRpcError } from "../core/index.js";
import {
  canQuiesce,
  type DomainState,
  type DomainStatus,
  type MigrationProgress,
  vmStateOf,
} from "../drivers/index.js";
import {
  type MigrationRecord,
  MigrationRecordSchema,
} from "../gen/debvisor/store/v1/records_pb.js";
import {
  type Migration,
  MigrationKind,
  MigrationPhase,
  MigrationSchema,
  MigrationState,
} from "../gen/debvisor/v1/migration_pb.js";
import { type VmInfo, VmState } from "../gen/debvisor/v1/vm_pb.js";
import type { EventSink } from "./event-recorder.js";
import type { Executors } from "./executors.js";
import type { Inventory } from "./inventory.js";
import { createMigrationEvents } from "./migration-events.js";
import type { Plan, Planner } from "./migration-planner.js";
import { isActive, type MigrationRecords } from "./migration-records.js";
import type { RunnerRegistry } from "./runner-registry.js";
import { visibleTo } from "./tenancy.js";
import { timestampFromMs } from "./timestamp.js";

/** What to migrate. */
export interface MigrationRequest {
  readonly vmId: string;
  readonly source?: string;
  /** Empty: the planner picks. */
  readonly target?: string;
  readonly allowDowntime: boolean;
  readonly kind: MigrationKind;
  readonly requestedBy: string;
  /** The caller's tenant; undefined: cluster-wide. */
  readonly tenant: string | undefined;
}

/** Options of {@link createMigrationEngine}. */
export interface MigrationEngineOptions {
  readonly inventory: Inventory;
  readonly executors: Executors;
  readonly planner: Planner;
  readonly records: MigrationRecords;
  readonly runners: RunnerRegistry;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Progress is written to the store at most this often (default 1000 ms). */
  readonly progressSaveMs?: number;
  /** Told of each migration settled by reconciliation (for the audit trail). */
  readonly onSettled?: (migration: Migration) => void;
  /** Where each migration's start, phases and end are told (default: nowhere). */
  readonly events?: EventSink;
}

/** Plans, runs, watches, cancels and reconciles migrations. */
export interface MigrationEngine {
  /** Plans a migration for a caller; a VM the caller may not see plans like a missing one. */
  plan(
    req: Omit<MigrationRequest, "kind" | "requestedBy">,
    signal?: AbortSignal,
    options?: { failover?: boolean },
  ): Promise<Plan & { vm?: VmInfo; revisions: ReadonlyMap<string, number> }>;
  /** Plans, reserves and starts a migration; resolves once it is running. */
  start(req: MigrationRequest, signal?: AbortSignal): Promise<Migration>;
  /** Resolves with the migration once it has finished. */
  wait(id: string, signal: AbortSignal): Promise<Migration>;
  /** The migration now, then each change, until it finishes. */
  watch(id: string, tenant: string | undefined, signal: AbortSignal): AsyncIterable<Migration>;
  cancel(id: string, tenant: string | undefined, signal?: AbortSignal): Promise<Migration>;
  get(id: string, tenant: string | undefined, signal?: AbortSignal): Promise<Migration>;
  /** Migrations the tenant (or, given a predicate, the tenants it accepts) may see, newest first. */
  list(
    tenant: string | undefined | ((tenant: string) => boolean),
    signal?: AbortSignal,
  ): Promise<Migration[]>;
  /**
   * Finishes or rolls back migrations whose runner is gone, from what the
   * hypervisors report. Returns how many it settled.
   */
  reconcile(signal?: AbortSignal): Promise<number>;
  /** What failover.ts shares with the engine. */
  readonly internals: EngineInternals;
  /** Aborts every migration this process runs (each rolls back): its runner lease was lost. */
  abortAll(reason: string): void;
  /** Stops every migration this process runs (each rolls back) and waits for them. */
  close(): Promise<void>;
}

/** What failover shares with the engine: records, notification, ids. */
export interface EngineInternals {
  newId(): string;
  newRecord(fields: {
    id: string;
    vm: VmInfo;
    source: string;
    target: string;
    live: boolean;
    allowDowntime: boolean;
    kind: MigrationKind;
    requestedBy: string;
  }): MigrationRecord;
  /** Stores a changed record and tells its watchers. */
  publish(record: MigrationRecord, options?: { final?: boolean; force?: boolean }): Promise<void>;
  /** Marks an operation as this process's until `disown`: reconciliation leaves it alone. */
  own(id: string): void;
  disown(id: string): void;
}

/** Plan-and-reserve rounds before a start gives up with CONFLICT (parallel drains race for the same room). */
const MAX_BEGIN_ATTEMPTS = 25;
/** Limit of a backend step taken after the caller's signal no longer applies. */
const BACKEND_STEP_MS = 120_000;
/** What settling assumes of a source it cannot reach while the target lacks the VM. */
const UNREACHABLE: DomainStatus = {
  id: "",
  state: "stopped",
  vcpus: 0,
  memoryBytes: 0n,
  persistent: true,
};

/** Creates the {@link MigrationEngine}. */
export function createMigrationEngine(options: MigrationEngineOptions): MigrationEngine {
  const { inventory, executors, planner, records, runners, clock, logger } = options;
  const saveEvery = options.progressSaveMs ?? 1000;
  const running = new Map<string, { abort: AbortController; done: Promise<void> }>();
  /**
   * Migrations and failovers this process is starting or running: from just
   * before their record is written until they finish. Reconciliation never
   * touches these.
   */
  const owned = new Set<string>();
  let reconciling: Promise<number> | undefined;
  const listeners = new Map<string, Set<(m: Migration) => void>>();
  const lastSaved = new Map<string, number>();
  let counter = 0;
  const told = createMigrationEvents(options.events);

  const newId = () =>
    `m-${clock.now().toString(36).padStart(9, "0")}-${(counter++ % 1296).toString(36).padStart(2, "0")}${randomBytes(3).toString("hex")}`;

  function newRecord(f: Parameters<EngineInternals["newRecord"]>[0]): MigrationRecord {
    const now = timestampFromMs(clock.now());
    return create(MigrationRecordSchema, {
      migration: {
        migrationId: f.id,
        vm: { vmId: f.vm.id },
        source: { nodeId: { id: f.source } },
        target: { nodeId: { id: f.target } },
        state: MigrationState.PENDING,
        phase: MigrationPhase.PREPARING,
        live: f.live,
        allowDowntime: f.allowDowntime,
        kind: f.kind,
        requestedBy: f.requestedBy,
        created: now,
        updated: now,
      },
      runner: runners.id,
      vcpusReserved: f.vm.vcpus,
      memoryReserved: f.vm.memoryBytes,
      tenant: f.vm.tenant,
    });
  }

  /** Writes of one migration, in order: a slow progress save never lands after the final one. */
  const chains = new Map<string, Promise<void>>();
  function publish(
    record: MigrationRecord,
    opts: { final?: boolean; force?: boolean } = {},
  ): Promise<void> {
    const m = record.migration;
    if (m === undefined) return Promise.resolve();
    const id = m.migrationId;
    const now = clock.now();
    m.updated = timestampFromMs(now);
    if (opts.final) m.finished = timestampFromMs(now);
    // The state as of now: later changes to `record` must not leak into this write.
    const snap = clone(MigrationRecordSchema, record);
    const write = opts.final
      ? () => records.finish(snap)
      : opts.force || now - (lastSaved.get(id) ?? 0) >= saveEvery
        ? () => {
            lastSaved.set(id, now);
            return records.save(snap);
          }
        : undefined;
    const notify = () => {
      told.changed(snap);
      for (const l of listeners.get(id) ?? []) l(snap.migration as Migration);
    };
    const prev = chains.get(id) ?? Promise.resolve();
    const next = prev
      .catch(() => undefined)
      .then(async () => {
        if (write !== undefined) await write();
        notify();
      });
    chains.set(id, next);
    if (opts.final) {
      void next
        .catch(() => undefined)
        .finally(() => {
          if (chains.get(id) === next) chains.delete(id);
          lastSaved.delete(id);
        });
    }
    return next;
  }

  async function visibleVm(vmId: string, tenant: string | undefined, signal?: AbortSignal) {
    const vm = await inventory.findVm(vmId, signal);
    return vm !== undefined && visibleTo(vm, tenant) ? vm : undefined;
  }

  async function planFor(
    req: Omit<MigrationRequest, "kind" | "requestedBy">,
    signal?: AbortSignal,
    failover = false,
  ) {
    const vm = await visibleVm(req.vmId, req.tenant, signal);
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
      };
    }
    const [nodes, reserved, inFlight] = await Promise.all([
      inventory.listNodes(signal),
      records.reserved(signal),
      records.locked(vm.id, signal),
    ]);
    const plan = await planner.plan(
      {
        vm,
        nodes,
        reserved: reserved.byNode,
        inFlight,
        source: req.source,
        target: req.target,
        allowDowntime: req.allowDowntime,
        failover,
      },
      signal,
    );
    return { plan, vm, revisions: reserved.revisions };
  }

  async function run(record: MigrationRecord, vm: VmInfo, signal: AbortSignal) {
    const m = record.migration;
    if (m === undefined) return;
    const source = m.source?.nodeId?.id ?? "";
    const target = m.target?.nodeId?.id ?? "";
    const src = executors.forNode(source);
    const dst = executors.forNode(target);
    let restartOnTarget = false;
    let moved = false;
    try {
      if (src === undefined || dst === undefined) throw new RpcError("BACKEND_UNAVAILABLE");
      m.state = MigrationState.RUNNING;
      await publish(record, { force: true });
      const before = await src.info(vm.id, signal);
      if (before === undefined) throw new RpcError("VM_NOT_FOUND");
      if (!m.live && before.state === "running") {
        // Offline move: stop it here, move it, start it there. From the moment
        // the stop is asked for, the vm must run again wherever it ends up.
        m.message = "stopping the vm for an offline move";
        record.restartAfter = true;
        restartOnTarget = true;
        await publish(record, { force: true });
        await src.stop(vm.id, { force: false, signal });
      }
      await src.migrate(vm.id, executors.destination(target), {
        live: m.live,
        signal,
        onProgress: (p) => {
          applyProgress(m, p);
          publish(record, { force: p.phase !== "transferring" }).catch((err: unknown) =>
            logger.warn({ err, migration: m.migrationId }, "progress not saved"),
          );
        },
      });
      moved = true;
      // Past the move, cancelling no longer applies: the vm is started there regardless.
      if (restartOnTarget) await dst.start(vm.id, AbortSignal.timeout(BACKEND_STEP_MS));
      m.state = MigrationState.SUCCEEDED;
      m.phase = MigrationPhase.COMPLETED;
      m.progressPct = 100;
      m.message = m.live ? "migrated live" : "moved stopped";
    } catch (err) {
      const rpc = toRpcError(err);
      if (rpc.reason === "SHUTTING_DOWN" && !moved) {
        // The node's agent runs the move itself and this process is stopping: the record
        // stays RUNNING, and whoever settles orphans asks the agents how it ended.
        logger.info(
          { migration: m.migrationId, vm: vm.id },
          "left to the node's agent and a successor",
        );
        return;
      }
      if (moved) {
        m.state = MigrationState.FAILED;
        m.phase = MigrationPhase.COMPLETED;
        m.message = `moved to ${target} but not started there: ${rpc.message}`;
      } else {
        if (restartOnTarget) {
          await src
            ?.start(vm.id, AbortSignal.timeout(BACKEND_STEP_MS))
            .catch((e: unknown) => logger.error({ err: e, vm: vm.id }, "restart on source failed"));
        }
        m.state = signal.aborted ? MigrationState.CANCELLED : MigrationState.FAILED;
        m.phase = MigrationPhase.ROLLED_BACK;
        m.message = signal.aborted
          ? `cancelled; the vm stays on ${source}`
          : `${rpc.message}; the vm stays on ${source}`;
      }
      logger.warn({ err, migration: m.migrationId, vm: vm.id }, "migration did not complete");
    }
    if (moved) {
      const state = m.live || restartOnTarget ? VmState.RUNNING : vm.state;
      await inventory
        .moveVm({ ...vm, state }, source, target)
        .catch((err: unknown) => logger.warn({ err }, "inventory not updated; heartbeats will"));
    }
    await publish(record, { final: true });
  }

  function launch(record: MigrationRecord, vm: VmInfo) {
    const id = record.migration?.migrationId ?? "";
    const abort = new AbortController();
    const done = run(record, vm, abort.signal)
      .catch((err: unknown) => logger.error({ err, migration: id }, "migration runner failed"))
      .finally(() => {
        running.delete(id);
        owned.delete(id);
      });
    running.set(id, { abort, done });
  }

  async function load(id: string, tenant: string | undefined, signal?: AbortSignal) {
    const rec = await records.get(id, signal);
    if (rec?.migration === undefined || (tenant !== undefined && rec.tenant !== tenant))
      throw new RpcError("MIGRATION_NOT_FOUND");
    return rec;
  }

  /**
   * Settles an orphaned migration from what the hypervisors say; false (and
   * nothing written: the lock and reservation stay) while either still runs
   * a migration job of the VM, to be looked at again by a later pass.
   */
  async function settle(record: MigrationRecord, signal?: AbortSignal): Promise<boolean> {
    const m = record.migration;
    if (m === undefined) return true;
    const vmId = m.vm?.vmId ?? "";
    const source = m.source?.nodeId?.id ?? "";
    const target = m.target?.nodeId?.id ?? "";
    const sig = signal ?? AbortSignal.timeout(60_000);
    // A node that runs jobs itself (an agent) may still be moving the vm: its outcome decides.
    for (const node of [source, target]) {
      const driver = executors.forNode(node);
      if (driver !== undefined && canQuiesce(driver)) await driver.quiesce(vmId, sig);
    }
    const onTarget = await executors.forNode(target)?.info(vmId, sig);
    // A source that cannot be reached (its node died too) did not hand the VM
    // over: the target is the one that decides. Settling then releases the
    // VM's lock, so failover can take it.
    const onSource = await executors
      .forNode(source)
      ?.info(vmId, sig)
      .catch((err: unknown) => {
        logger.warn({ err, node: source }, "source unreachable while settling");
        return onTarget === undefined ? UNREACHABLE : undefined;
      });
    if (
      onTarget?.migrating === true ||
      (onSource !== UNREACHABLE && onSource?.migrating === true)
    ) {
      logger.info(
        { migration: m.migrationId, vm: vmId },
        "hypervisor job still running; settling later",
      );
      return false;
    }
    const restart = async (node: string, state: DomainState | undefined) => {
      if (!record.restartAfter || state !== "stopped") return;
      await executors
        .forNode(node)
        ?.start(vmId, sig)
        .catch((err: unknown) =>
          logger.error({ err, vm: vmId, node }, "restart after settling failed"),
        );
    };
    if (record.migration?.kind === MigrationKind.FAILOVER && onTarget === undefined) {
      m.state = MigrationState.FAILED;
      m.phase = MigrationPhase.ROLLED_BACK;
      m.message = "control plane stopped mid-failover; the vm was not restarted";
    } else if (onTarget !== undefined && onSource === undefined) {
      await restart(target, onTarget.state);
      m.state = MigrationState.SUCCEEDED;
      m.phase = MigrationPhase.COMPLETED;
      m.progressPct = 100;
      m.message = `finished while the control plane was down; the vm is on ${target}`;
      const vm = await inventory.findVm(vmId, signal);
      if (vm !== undefined)
        await inventory.moveVm({ ...vm, state: vmStateOf(onTarget.state) }, source, target, signal);
    } else if (onSource !== undefined && onTarget === undefined) {
      if (onSource !== UNREACHABLE) await restart(source, onSource.state);
      m.state = MigrationState.FAILED;
      m.phase = MigrationPhase.ROLLED_BACK;
      m.message =
        onSource === UNREACHABLE
          ? `control plane stopped mid-migration and ${source} is unreachable; the vm never reached ${target}`
          : `control plane stopped mid-migration; rolled back, the vm stays on ${source}`;
    } else {
      m.state = MigrationState.FAILED;
      m.message =
        onSource === undefined
          ? `vm found on neither ${source} nor ${target}; operator action needed`
          : `vm defined on both ${source} and ${target}; operator action needed`;
      logger.error({ migration: m.migrationId, vm: vmId }, m.message);
    }
    await publish(record, { final: true });
    return true;
  }

  return {
    async plan(req, signal, opts) {
      const { plan, vm, revisions } = await planFor(req, signal, opts?.failover ?? false);
      return { ...plan, vm, revisions };
    },
    async start(req, signal) {
      for (let attempt = 0; attempt < MAX_BEGIN_ATTEMPTS; attempt++) {
        const { plan, vm, revisions } = await planFor(req, signal);
        if (vm === undefined) throw new RpcError("VM_NOT_FOUND");
        if (!plan.allowed) {
          const inFlight = plan.checks.find((c) => c.name === "no_migration_in_flight");
          if (inFlight !== undefined && !inFlight.passed)
            throw new RpcError("MIGRATION_IN_PROGRESS");
          const failed = plan.checks.find((c) => !c.passed);
          const noTarget = plan.target === "" && (req.target ?? "") === "";
          throw new RpcError(noTarget ? "NO_TARGET" : "MIGRATION_NOT_ALLOWED", {
            message: `${noTarget ? "no node can take this vm now" : "migration not allowed"}: ${failed?.reason ?? "a check failed"}`,
          });
        }
        const id = newId();
        const record = newRecord({
          id,
          vm,
          source: plan.source,
          target: plan.target,
          live: plan.live,
          allowDowntime: req.allowDowntime,
          kind: req.kind,
          requestedBy: req.requestedBy,
        });
        owned.add(id);
        let begun = false;
        try {
          begun = await records.begin(record, revisions.get(plan.target) ?? 0, signal);
        } finally {
          if (!begun) owned.delete(id);
        }
        if (begun) {
          launch(record, vm);
          const m = record.migration;
          if (m === undefined) throw new TypeError("record without migration");
          return m;
        }
        // Another start took the room or the vm first: plan again, after a moment.
        await sleep(Math.random() * 10 * (attempt + 1));
      }
      throw new RpcError("CONFLICT");
    },
    async wait(id, signal) {
      for await (const m of this.watch(id, undefined, signal)) {
        if (!isActive(m.state)) return m;
      }
      throw abortError(signal);
    },
    async *watch(id, tenant, signal) {
      const rec = await load(id, tenant, signal);
      const queue: Migration[] = [];
      let wake: (() => void) | undefined;
      const listener = (m: Migration) => {
        queue.push(clone(MigrationSchema, m));
        wake?.();
      };
      let set = listeners.get(id);
      if (set === undefined) {
        set = new Set();
        listeners.set(id, set);
      }
      set.add(listener);
      try {
        let last = rec.migration as Migration;
        yield last;
        while (isActive(last.state)) {
          if (queue.length === 0) {
            // Local migrations notify; others (another process runs them) are polled.
            await new Promise<void>((resolve) => {
              const done = () => {
                clearTimeout(t);
                signal.removeEventListener("abort", done);
                resolve();
              };
              const t = setTimeout(done, running.has(id) ? 5000 : 500);
              wake = done;
              signal.addEventListener("abort", done, { once: true });
            });
            wake = undefined;
            signal.throwIfAborted();
            if (queue.length === 0) {
              const fresh = await records.get(id, signal);
              if (fresh?.migration !== undefined) queue.push(fresh.migration);
            }
          }
          const next = queue.shift();
          if (next === undefined) continue;
          last = next;
          yield last;
        }
      } finally {
        set.delete(listener);
        if (set.size === 0) listeners.delete(id);
      }
    },
    async cancel(id, tenant, signal) {
      const rec = await load(id, tenant, signal);
      const m = rec.migration as Migration;
      if (!isActive(m.state)) throw new RpcError("MIGRATION_FINISHED");
      const local = running.get(id);
      if (local === undefined)
        throw new RpcError("MIGRATION_IN_PROGRESS", {
          message: "this migration is run by another control-plane process; cancel it there",
        });
      local.abort.abort();
      await local.done;
      return (await load(id, tenant, signal)).migration as Migration;
    },
    async get(id, tenant, signal) {
      return (await load(id, tenant, signal)).migration as Migration;
    },
    async list(tenant, signal) {
      const all = await records.list(signal);
      return all
        .filter((r) =>
          typeof tenant === "function"
            ? tenant(r.record.tenant)
            : tenant === undefined || r.record.tenant === tenant,
        )
        .map((r) => r.record.migration as Migration)
        .filter((m) => m !== undefined)
        .reverse();
    },
    reconcile(signal) {
      // One pass at a time: a slow settle must not be claimed again by the next pass.
      reconciling ??= reconcilePass(signal).finally(() => {
        reconciling = undefined;
      });
      return reconciling;
    },
    internals: {
      newId,
      newRecord,
      publish,
      own: (id) => owned.add(id),
      disown: (id) => owned.delete(id),
    },
    abortAll(reason) {
      for (const [id, r] of running) {
        logger.warn({ migration: id, reason }, "aborting a migration this process runs");
        r.abort.abort();
      }
    },
    async close() {
      for (const r of running.values()) r.abort.abort();
      await Promise.all([...running.values()].map((r) => r.done));
    },
  };

  async function reconcilePass(signal?: AbortSignal): Promise<number> {
    let settled = 0;
    for (const { record, modRevision } of await records.list(signal)) {
      const m = record.migration;
      if (m === undefined || !isActive(m.state) || owned.has(m.migrationId)) continue;
      // Someone else's, and that process is alive: it is theirs to finish.
      if (record.runner !== runners.id && (await runners.isAlive(record.runner, signal))) continue;
      const claimed = create(MigrationRecordSchema, { ...record, runner: runners.id });
      if (!(await records.claim(claimed, modRevision, signal))) continue;
      try {
        if (!(await settle(claimed, signal))) continue;
        settled++;
        logger.info({ migration: m.migrationId, state: claimed.migration?.state }, "reconciled");
        if (claimed.migration !== undefined) options.onSettled?.(claimed.migration);
      } catch (err) {
        logger.warn({ err, migration: m.migrationId }, "reconcile failed; will retry");
      }
    }
    return settled;
  }
}

function applyProgress(m: Migration, p: MigrationProgress) {
  m.phase =
    p.phase === "preparing"
      ? MigrationPhase.PREPARING
      : p.phase === "transferring"
        ? MigrationPhase.TRANSFERRING
        : p.phase === "switchover"
          ? MigrationPhase.SWITCHOVER
          : MigrationPhase.COMPLETED;
  m.progressPct = Math.max(0, Math.min(100, Math.round(p.percent)));
  m.bytesTransferred = p.bytesTransferred;
  m.bytesTotal = p.bytesTotal;
  m.downtimeEstimateMs = p.downtimeEstimateMs ?? 0;
  m.message = "";
}
