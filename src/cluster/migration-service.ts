import {
  type Clock,
  defineService,
  notImplemented,
  paginate,
  principalOf,
  RpcError,
  type ServiceBinding,
  scopeOf,
  systemClock,
} from "../core/index.js";
import { StatusCode } from "../gen/debvisor/v1/common_pb.js";
import {
  type GetMigrationRequest,
  type ListMigrationsRequest,
  type Migration,
  MigrationKind,
  MigrationService,
  MigrationState,
  type VMMigrateSpec,
  type VMRef,
} from "../gen/debvisor/v1/migration_pb.js";
import { type FailoverDeps, failoverVm } from "./failover.js";
import type { MigrationEngine } from "./migration-engine.js";
import { type MigrateSpec, retriedMigration } from "./migration-retry.js";
import { filteredScope } from "./tenancy.js";
import type { WatchQuota } from "./watch-quota.js";

/** A request's VM, and a migration id: what each method acts on. */
const vmOf = { kind: "vm", id: (req: VMMigrateSpec) => req.vm?.vmId ?? "" } as const;
const migrationOf = {
  kind: "migration",
  id: (req: GetMigrationRequest) => req.migrationId,
} as const;

const POLICIES = {
  prepareMigration: { permission: "migration:plan", mutating: false, target: vmOf },
  migrateVM: { permission: "migration:execute", mutating: true, target: vmOf },
  startMigration: { permission: "migration:execute", mutating: true, target: vmOf },
  watchMigration: { permission: "migration:list", mutating: false, target: migrationOf },
  cancelMigration: { permission: "migration:execute", mutating: true, target: migrationOf },
  failoverVM: {
    permission: "migration:failover",
    mutating: true,
    target: { kind: "vm", id: (req: VMRef) => req.vmId },
  },
  listMigrations: { permission: "migration:list", mutating: false },
  getMigration: { permission: "migration:list", mutating: false, target: migrationOf },
} as const;

/** Dependencies of the MigrationService handlers. */
export interface MigrationServiceDeps {
  readonly engine: MigrationEngine;
  readonly failover: FailoverDeps;
  /** Recognises retried MigrateVM calls by age (default: the system clock). */
  readonly clock?: Clock;
  /** Open watches per caller (WatchMigration), shared with the daemon's other watches. */
  readonly quota?: WatchQuota;
}

/** MigrationService: planning, migration with progress, cancel, failover and the history. */
export function createMigrationService(deps?: MigrationServiceDeps): ServiceBinding {
  if (deps === undefined) return withoutEngine();
  const { engine } = deps;
  const now = () => (deps.clock ?? systemClock).now();
  const start = (req: VMMigrateSpec, ctx: { tenant?: string; signal: AbortSignal }, id: string) =>
    engine.start(
      {
        vmId: req.vm?.vmId ?? "",
        source: req.source?.nodeId?.id,
        target: req.target?.nodeId?.id,
        allowDowntime: req.allowDowntime,
        kind: MigrationKind.MIGRATE,
        requestedBy: id,
        tenant: ctx.tenant,
      },
      ctx.signal,
    );
  return defineService(MigrationService, POLICIES, {
    async prepareMigration(req, ctx) {
      const plan = await engine.plan(
        {
          vmId: req.vm?.vmId ?? "",
          source: req.source?.nodeId?.id,
          target: req.target?.nodeId?.id,
          allowDowntime: req.allowDowntime,
          tenant: ctx.tenant,
        },
        ctx.signal,
      );
      const failed = plan.checks.find((c) => !c.passed);
      return {
        status: plan.allowed ? StatusCode.STATUS_OK : StatusCode.STATUS_ERROR,
        message: plan.allowed
          ? `${plan.live ? "live" : "offline"} migration to ${plan.target} allowed`
          : `not allowed: ${failed?.reason ?? "a check failed"}`,
        allowed: plan.allowed,
        checks: plan.checks.map((c) => ({ ...c })),
        source: plan.source === "" ? undefined : { nodeId: { id: plan.source } },
        target: plan.target === "" ? undefined : { nodeId: { id: plan.target } },
        targetReason: plan.targetReason,
        live: plan.live,
      };
    },
    async migrateVM(req, ctx) {
      const requestedBy = principalOf(ctx).id;
      const spec: MigrateSpec = {
        vmId: req.vm?.vmId ?? "",
        source: req.source?.nodeId?.id,
        target: req.target?.nodeId?.id,
        allowDowntime: req.allowDowntime,
        requestedBy,
      };
      const earlier = async () =>
        retriedMigration(await engine.list(ctx.tenant, ctx.signal), spec, now());
      // A retry (same principal, same spec) attaches to the attempt in flight,
      // or answers the outcome of the one that just succeeded.
      let id = (await earlier())?.migrationId;
      if (id === undefined) {
        try {
          id = (await start(req, ctx, requestedBy)).migrationId;
        } catch (err) {
          // Two retries raced: the other one started it.
          const raced =
            err instanceof RpcError && err.reason === "MIGRATION_IN_PROGRESS"
              ? await earlier()
              : undefined;
          if (raced === undefined) throw err;
          id = raced.migrationId;
        }
      }
      // Waits for the end or the call's deadline; the migration itself goes on either way.
      const done = await engine.wait(id, ctx.signal).catch((err: unknown) => {
        if (ctx.signal.aborted) throw new RpcError("DEADLINE_EXCEEDED", { cause: err });
        throw err;
      });
      const ok = done.state === MigrationState.SUCCEEDED;
      return {
        status: ok ? StatusCode.STATUS_OK : StatusCode.STATUS_ERROR,
        message: done.message,
        migrationId: done.migrationId,
      };
    },
    async startMigration(req, ctx) {
      return start(req, ctx, principalOf(ctx).id);
    },
    async *watchMigration(req: GetMigrationRequest, ctx) {
      // A long move followed by many streams: each one polls the migration's record.
      const release = deps.quota?.open(ctx);
      try {
        yield* engine.watch(req.migrationId, ctx.tenant, ctx.signal);
      } finally {
        release?.();
      }
    },
    async cancelMigration(req, ctx) {
      return engine.cancel(req.migrationId, ctx.tenant, ctx.signal);
    },
    async failoverVM(req, ctx) {
      const m = await failoverVm(
        deps.failover,
        req.vmId,
        principalOf(ctx).id,
        ctx.tenant,
        ctx.signal,
      );
      return {
        status: StatusCode.STATUS_OK,
        message: m.message,
        target: m.target,
        migrationId: m.migrationId,
      };
    },
    async listMigrations(req, ctx) {
      const scope = filteredScope(scopeOf(ctx), req.tenant);
      const all = (await engine.list(scope.canSee, ctx.signal)).filter((m) =>
        migrationMatches(m, req),
      );
      // Ids sort by creation time; the page key keeps newest-first order stable.
      const page = paginate(all, (m) => invert(m.migrationId), req.pageSize, req.pageToken);
      return { migrations: page.items, nextPageToken: page.nextPageToken };
    },
    async getMigration(req, ctx) {
      return engine.get(req.migrationId, ctx.tenant, ctx.signal);
    },
  });
}

/** The service of a process without hypervisor drivers: reads are empty, actions NOT_IMPLEMENTED. */
function withoutEngine(): ServiceBinding {
  return defineService(MigrationService, POLICIES, {
    prepareMigration: notImplemented,
    migrateVM: notImplemented,
    startMigration: notImplemented,
    // biome-ignore lint/correctness/useYield: refuses before the first message
    async *watchMigration() {
      throw new RpcError("NOT_IMPLEMENTED");
    },
    cancelMigration: notImplemented,
    failoverVM: notImplemented,
    async listMigrations() {
      return { migrations: [], nextPageToken: "" };
    },
    async getMigration() {
      throw new RpcError("MIGRATION_NOT_FOUND");
    },
  });
}

/** A key that sorts in the reverse order of `id` (ids are lower-case base-36 and hex). */
function invert(id: string): string {
  let out = "";
  for (const ch of id) out += String.fromCharCode(0x7e - (ch.charCodeAt(0) - 0x21));
  return out;
}

/** Whether a migration passes a ListMigrations filter (tenancy aside). */
export function migrationMatches(m: Migration, req: ListMigrationsRequest): boolean {
  const vmId = req.vm?.vmId ?? "";
  return (
    (vmId === "" || m.vm?.vmId === vmId) &&
    (req.state === MigrationState.UNSPECIFIED || m.state === req.state)
  );
}
