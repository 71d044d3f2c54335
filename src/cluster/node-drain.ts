import { create } from "@bufbuild/protobuf";
import { RpcError, toRpcError } from "../core/index.js";
import {
  type Migration,
  MigrationKind,
  MigrationSchema,
  MigrationState,
} from "../gen/debvisor/v1/migration_pb.js";
import { type DrainProgress, DrainProgressSchema } from "../gen/debvisor/v1/node_pb.js";
import type { Inventory } from "./inventory.js";
import type { MigrationEngine } from "./migration-engine.js";

/** What to drain. */
export interface DrainRequest {
  readonly nodeId: string;
  /** Migrations at a time, 1 to 16. */
  readonly maxParallel: number;
  readonly allowDowntime: boolean;
  readonly requestedBy: string;
}

/**
 * Cordons a node, then migrates every VM it reports to the best other node,
 * `maxParallel` at a time, yielding progress after each start and finish.
 * A VM that cannot move (no target passes, a migration fails) is counted as
 * failed and the drain goes on with the rest. Aborting `signal` stops
 * starting new migrations; those already running finish and are reported.
 */
export async function* drainNode(
  deps: { readonly inventory: Inventory; readonly engine: MigrationEngine },
  req: DrainRequest,
  signal: AbortSignal,
): AsyncGenerator<DrainProgress> {
  const { inventory, engine } = deps;
  await inventory.cordon(req.nodeId, true, signal);
  const node = await inventory.getNode(req.nodeId, signal);
  if (node === undefined) throw new RpcError("NODE_NOT_FOUND");
  const pending = node.vms.map((vm) => vm.id).sort();
  const total = pending.length;
  let succeeded = 0;
  let failed = 0;
  const events: DrainProgress[] = [];
  let wake: (() => void) | undefined;
  const inFlight = new Set<Promise<void>>();
  /** Migrations started and not yet finished: what "in flight" reports. */
  let moving = 0;
  const emit = (migration: Migration | undefined, message: string) => {
    events.push(
      create(DrainProgressSchema, {
        total,
        succeeded,
        failed,
        inFlight: moving,
        migration,
        message,
      }),
    );
    wake?.();
  };

  const startOne = async (vmId: string) => {
    let m: Migration;
    try {
      m = await engine.start(
        {
          vmId,
          source: req.nodeId,
          allowDowntime: req.allowDowntime,
          kind: MigrationKind.DRAIN,
          requestedBy: req.requestedBy,
          tenant: undefined,
        },
        signal,
      );
    } catch (err) {
      failed++;
      emit(
        create(MigrationSchema, { vm: { vmId }, source: { nodeId: { id: req.nodeId } } }),
        `${vmId}: ${toRpcError(err).message}`,
      );
      return;
    }
    moving++;
    emit(m, `${vmId}: migrating to ${m.target?.nodeId?.id ?? "?"}`);
    // Runs to the end even when the drain is cancelled: the migration is under way.
    let done: Migration;
    try {
      done = await engine.wait(m.migrationId, AbortSignal.timeout(24 * 3_600_000));
    } catch (err) {
      moving--;
      failed++;
      emit(m, `${vmId}: lost track of migration ${m.migrationId}: ${toRpcError(err).message}`);
      return;
    }
    moving--;
    if (done.state === MigrationState.SUCCEEDED) succeeded++;
    else failed++;
    emit(done, `${vmId}: ${done.message}`);
  };

  emit(undefined, `cordoned ${req.nodeId}; ${total} vms to move`);
  while ((pending.length > 0 && !signal.aborted) || inFlight.size > 0 || events.length > 0) {
    while (pending.length > 0 && inFlight.size < req.maxParallel && !signal.aborted) {
      const vmId = pending.shift() as string;
      const p: Promise<void> = startOne(vmId).finally(() => {
        inFlight.delete(p);
        wake?.();
      });
      inFlight.add(p);
    }
    const next = events.shift();
    if (next !== undefined) {
      yield next;
      continue;
    }
    await new Promise<void>((resolve) => {
      wake = resolve;
    });
    wake = undefined;
  }
  const skipped = pending.length;
  yield create(DrainProgressSchema, {
    total,
    succeeded,
    failed,
    inFlight: 0,
    done: true,
    message:
      skipped > 0
        ? `drain stopped: ${succeeded} moved, ${failed} failed, ${skipped} not attempted`
        : failed > 0
          ? `drain finished with failures: ${succeeded} moved, ${failed} failed`
          : `drained: ${succeeded} vms moved`,
  });
}
