import { existsSync } from "node:fs";
import { join } from "node:path";
import type * as grpc from "@grpc/grpc-js";
import { MigrationState } from "../../src/gen/debvisor/v1/migration_pb.js";
import { VmOperationState } from "../../src/gen/debvisor/v1/vm_pb.js";
import type { KvStore } from "../../src/store/index.js";
import type { Checker } from "./chaos-checker.js";
import type { ChaosCluster, ChaosDaemon } from "./chaos-cluster.js";
import type { ChaosHistory } from "./chaos-history.js";
import { readStoreView, type StoreView } from "./chaos-store-view.js";

/** An operation or migration issued and not yet seen final. */
interface Tracked {
  readonly id: string;
  readonly what: "operation" | "migration";
  /** create, start, stop, migrate, drain-migrate, failover. */
  readonly kind: string;
  readonly vm: string;
  /** History time it was issued. */
  readonly issuedAt: number;
}

const FINAL_OPS = new Set([
  VmOperationState.SUCCEEDED,
  VmOperationState.FAILED,
  VmOperationState.CANCELLED,
]);
const FINAL_MIGRATIONS = new Set([
  MigrationState.SUCCEEDED,
  MigrationState.FAILED,
  MigrationState.CANCELLED,
]);

/** A short form of a gRPC error for the history. */
export function errorText(err: unknown): string {
  const e = err as grpc.ServiceError;
  const reason = e.metadata?.get?.("debvisor-error-reason")[0];
  return `error ${e.code ?? "?"} ${reason ?? ""} ${(e.details ?? e.message ?? String(err)).slice(0, 160)}`;
}

/**
 * Follows every operation and migration the workload started to its final
 * state (asking whichever daemon answers), and holds each acknowledged
 * outcome to the hypervisors: a SUCCEEDED migration's VM is on its target
 * (unless the store has placed it elsewhere since), a SUCCEEDED start runs
 * and a SUCCEEDED stop does not (when nothing else was asked of the VM
 * since, nothing is under way for it and no fault came in between).
 */
export function createOutcomes(options: {
  readonly cluster: ChaosCluster;
  readonly store: KvStore;
  readonly checker: Checker;
  readonly history: ChaosHistory;
  /** History time of the last fault or heal. */
  readonly lastFaultAt: () => number;
}) {
  const { cluster, store, checker, history } = options;
  const open = new Map<string, Tracked>();
  /** VM id to when the workload last issued anything for it. */
  const lastIssued = new Map<string, number>();
  /** Calls about each VM made and not answered yet, and when one was last made while another was. */
  const unanswered = new Map<string, number>();
  const racedAt = new Map<string, number>();
  const counts = { succeeded: 0, failed: 0, cancelled: 0, checked: 0 };

  const upDaemons = (): ChaosDaemon[] => cluster.daemons.filter((d) => d.state === "up");

  const inInbox = (node: string, vm: string) => {
    const dir = cluster.agents.get(node)?.dir;
    return dir !== undefined && existsSync(join(dir, "sim-inbox", `${vm}.json`));
  };

  /**
   * Another migration of t's VM under way in the store: in `first` (read
   * after the hypervisors' sample) or in the next 3 s, as "id vm
   * source->target STATE"; undefined when none is. Only a migration counts:
   * a placement that merely changed could be the control plane correcting
   * the very outcome checked.
   */
  const movingAgain = async (t: Tracked, first: StoreView): Promise<string | undefined> => {
    let s: StoreView | undefined = first;
    for (let i = 0; i < 15; i++) {
      const other = s?.openMigrations.find(
        (m) => m.split(" ")[1] === t.vm && !m.startsWith(`${t.id} `),
      );
      if (other !== undefined) return other;
      s = await readStoreView(store, AbortSignal.timeout(5000)).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 200));
    }
    return undefined;
  };

  const checkAck = async (t: Tracked, detail: { target?: string; node?: string }) => {
    const o = checker.sample();
    const s = await readStoreView(store, AbortSignal.timeout(5000)).catch(() => undefined);
    if (s === undefined) return;
    const rec = s.vms.get(t.vm);
    // Nothing else was asked of the VM since, or is still under way (a migration), and no fault came.
    const quiet =
      (lastIssued.get(t.vm) ?? 0) <= t.issuedAt &&
      (racedAt.get(t.vm) ?? -1) < t.issuedAt &&
      ![...open.values()].some((x) => x.vm === t.vm) &&
      options.lastFaultAt() < t.issuedAt;
    if ((t.kind === "migrate" || t.kind === "failover") && detail.target !== undefined) {
      if (rec?.node !== detail.target) {
        history.add(
          "note",
          `${t.id}: ${t.vm} moved again since (store: ${rec?.node}); not checked`,
        );
        return;
      }
      counts.checked++;
      // A handed-over domain is in the target's inbox until its agent adopts it; the inbox and
      // the domain list are two files, so they are read around each other, twice if need be.
      const target = detail.target;
      const has = () => {
        if (inInbox(target, t.vm)) return true;
        const now = checker.sample();
        return (now.defined.get(t.vm) ?? []).includes(target) || inInbox(target, t.vm);
      };
      const there =
        (o.defined.get(t.vm) ?? []).includes(target) ||
        has() ||
        (await new Promise((r) => setTimeout(r, 300)).then(has));
      // Another migration of the VM (a drain's) may have moved the domain before the store
      // records it: the sample comes first, the store's placement last.
      const movedBy = there ? undefined : await movingAgain(t, s);
      if (movedBy !== undefined) {
        history.add("note", `${t.id}: ${t.vm} moved again since (${movedBy}); not checked`);
        return;
      }
      if (!there)
        history.violation(
          "acknowledged outcome",
          `${t.kind} ${t.id} of ${t.vm} SUCCEEDED to ${detail.target}, but ${detail.target}'s hypervisor does not have it (defined on: ${(o.defined.get(t.vm) ?? []).join(", ") || "none"})`,
        );
      return;
    }
    if (!quiet || rec === undefined) return;
    // A migration's hand-over may be in flight (the source has let the domain go, the
    // target's agent has not adopted it from its inbox yet): looked at again once it has.
    const handedOver = [...cluster.agents.keys()].some((n) => inInbox(n, t.vm));
    const running = handedOver
      ? await new Promise((r) => setTimeout(r, 300)).then(
          () => checker.sample().running.get(t.vm) ?? [],
        )
      : (o.running.get(t.vm) ?? []);
    if (t.kind === "start") {
      counts.checked++;
      if (running.length === 0)
        history.violation(
          "acknowledged outcome",
          `start ${t.id} of ${t.vm} SUCCEEDED but no hypervisor runs it (store: ${rec.node})`,
        );
    } else if (t.kind === "stop") {
      counts.checked++;
      if (running.length > 0)
        history.violation(
          "acknowledged outcome",
          `stop ${t.id} of ${t.vm} SUCCEEDED but it runs on ${running.join(", ")}`,
        );
    } else if (t.kind === "create") {
      counts.checked++;
      if ((o.defined.get(t.vm) ?? []).length === 0 && !inInbox(rec.node, t.vm))
        history.violation(
          "acknowledged outcome",
          `create ${t.id} of ${t.vm} SUCCEEDED but no hypervisor has it`,
        );
    }
  };

  const poll = async (t: Tracked) => {
    const d = upDaemons()[0];
    if (d === undefined) return;
    try {
      if (t.what === "operation") {
        const op = await d.clients.vms.getOperation({ operationId: t.id }, { timeoutMs: 5000 });
        if (!FINAL_OPS.has(op.state)) return;
        open.delete(t.id);
        history.add(
          "reply",
          `${t.kind} ${t.vm} ${t.id}: ${VmOperationState[op.state]} ${op.reason} ${op.message.slice(0, 120)}`,
        );
        if (op.state === VmOperationState.SUCCEEDED) {
          counts.succeeded++;
          await checkAck(t, { node: op.nodeId?.id });
        } else if (op.state === VmOperationState.FAILED) counts.failed++;
        else counts.cancelled++;
      } else {
        const m = await d.clients.migrations.getMigration(
          { migrationId: t.id },
          { timeoutMs: 5000 },
        );
        if (!FINAL_MIGRATIONS.has(m.state)) return;
        open.delete(t.id);
        history.add(
          "reply",
          `${t.kind} ${t.vm} ${t.id} ${m.source?.nodeId?.id}->${m.target?.nodeId?.id}: ${MigrationState[m.state]} ${m.message.slice(0, 120)}`,
        );
        if (m.state === MigrationState.SUCCEEDED) {
          counts.succeeded++;
          await checkAck(t, { target: m.target?.nodeId?.id });
        } else if (m.state === MigrationState.FAILED) counts.failed++;
        else counts.cancelled++;
      }
    } catch {
      // that daemon is busy or gone: asked again next round
    }
  };

  return {
    counts,
    /** Follows `id`, asked for at history time `issuedAt` (when the call was made, not answered). */
    track(id: string, what: Tracked["what"], kind: string, vm: string, issuedAt = history.now()) {
      if (id === "" || open.has(id)) return;
      open.set(id, { id, what, kind, vm, issuedAt });
    },
    /**
     * A call about `vm` was made; the returned function is called once it is
     * answered. A call made while another about the same VM is unanswered
     * races it (two daemons may write them to the store in either order):
     * neither outcome is checked against the other.
     */
    issued(vm: string): () => void {
      const now = history.now();
      lastIssued.set(vm, now);
      const n = unanswered.get(vm) ?? 0;
      if (n > 0) racedAt.set(vm, now);
      unanswered.set(vm, n + 1);
      return () => unanswered.set(vm, (unanswered.get(vm) ?? 1) - 1);
    },
    /** Polls every open operation and migration once. */
    async pollAll() {
      await Promise.all([...open.values()].map(poll));
    },
    /** What is not final yet, one line each. */
    pending: () => [...open.values()].map((t) => `${t.what} ${t.id} (${t.kind} ${t.vm})`),
    openMigrationIds: () =>
      [...open.values()].filter((t) => t.what === "migration").map((t) => t.id),
    /** Records an acknowledged failover (the reply names the target) and checks it. */
    async failedOver(vm: string, target: string, migrationId: string) {
      counts.succeeded++;
      await checkAck(
        { id: migrationId, what: "migration", kind: "failover", vm, issuedAt: history.now() },
        { target },
      );
    },
  };
}

export type Outcomes = ReturnType<typeof createOutcomes>;
