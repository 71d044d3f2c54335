import type { KvStore } from "../../src/store/index.js";
import { CHAOS_BOUNDS } from "./chaos-bounds.js";
import type { ChaosHistory } from "./chaos-history.js";
import type { Observation, Observer } from "./chaos-observer.js";
import { readStoreView, type StoreView } from "./chaos-store-view.js";

/** Whether a node's agent process runs now (a frozen or dead agent cannot fence anything). */
export type AgentLiveness = (node: string) => "up" | "paused" | "dead";

/**
 * The checker: samples every node's hypervisor continuously and holds the
 * run to its safety property, never a VM running on two nodes. A copy
 * that lost its disk lock on a node whose agent runs is given
 * `staleCopyStopMs` to be stopped by the agent's fencing tick (storage
 * fencing, the design's second line); any other second copy is a
 * violation at once. After the heal, `settle` holds the run to its
 * liveness bounds and to the store agreeing with the hypervisors.
 */
export function createChecker(options: {
  readonly observer: Observer;
  readonly store: KvStore;
  readonly history: ChaosHistory;
  readonly agent: AgentLiveness;
}) {
  const { observer, store, history } = options;
  /** `vm@node` to when that lock-less copy was first seen running beside another. */
  const graceSince = new Map<string, number>();
  /** Double runs already reported (once each). */
  const reported = new Set<string>();
  let last = new Map<string, string>();
  let samples = 0;
  let latest: Observation | undefined;

  const sample = (): Observation => {
    const o = observer.observe();
    latest = o;
    samples++;
    const now = history.now();
    // The history keeps each change of where VMs run.
    const where = new Map([...o.running].map(([vm, nodes]) => [vm, nodes.join("+")]));
    const changes: string[] = [];
    for (const [vm, w] of where) if (last.get(vm) !== w) changes.push(`${vm}@${w}`);
    for (const vm of last.keys()) if (!where.has(vm)) changes.push(`${vm} stopped`);
    if (changes.length > 0) history.add("observe", `running: ${changes.join(", ")}`);
    last = where;
    const seen = new Set<string>();
    for (const [vm, nodes] of o.running) {
      if (nodes.length < 2) continue;
      const counted = nodes.filter((node) => {
        const view = o.nodes.find((n) => n.node === node)?.domains.get(vm);
        if (view?.holdsLocks === true || options.agent(node) !== "up") return true;
        const key = `${vm}@${node}`;
        seen.add(key);
        const since = graceSince.get(key) ?? now;
        graceSince.set(key, since);
        return now - since > CHAOS_BOUNDS.staleCopyStopMs;
      });
      const key = `${vm} ${nodes.join(" ")}`;
      if (counted.length >= 2 && !reported.has(key)) {
        reported.add(key);
        history.violation(
          "never twice",
          `vm ${vm} running on ${counted.join(" and ")} (${nodes
            .map((n) => {
              const d = o.nodes.find((x) => x.node === n)?.domains.get(vm);
              return `${n}: ${d?.holdsLocks ? "holds its disk locks" : "no disk lock"}, agent ${options.agent(n)}`;
            })
            .join("; ")})`,
        );
      }
    }
    for (const key of graceSince.keys()) if (!seen.has(key)) graceSince.delete(key);
    return o;
  };

  /** What is still wrong once everything healed, as one line each (empty: all good). */
  const settledProblems = (
    o: Observation,
    s: StoreView,
    pendingOps: readonly string[],
  ): string[] => {
    const problems: string[] = [];
    for (const [vm, r] of s.vms) {
      const running = o.running.get(vm) ?? [];
      if (r.managed && r.ha && r.desiredRunning && running.length !== 1)
        problems.push(
          `HA vm ${vm} (store: node ${r.node}, generation ${r.generation}) runs on ${running.length} nodes [${running.join(", ")}]`,
        );
      if (running.length === 1 && running[0] !== r.node)
        problems.push(`vm ${vm} runs on ${running[0]} but the store places it on ${r.node}`);
    }
    for (const op of pendingOps) problems.push(`operation not final: ${op}`);
    for (const m of s.openMigrations) problems.push(`migration not final: ${m}`);
    if (s.openMigrations.length === 0 && pendingOps.length === 0) {
      for (const l of s.locks) problems.push(`migration lock leaked: ${l}`);
      for (const r of s.reservations) problems.push(`reservation leaked: ${r}`);
    }
    return problems;
  };

  return {
    sample,
    samples: () => samples,
    latest: () => latest,
    /**
     * After the heal: samples until the run has settled (every HA VM that
     * should run runs once, every operation final, no lock or reservation
     * left, the store agreeing with the hypervisors) or `boundMs` passed;
     * what is still wrong then is a violation. Resolves with the time it took.
     */
    async settle(boundMs: number, pendingOps: () => readonly string[]): Promise<number> {
      const t0 = history.now();
      let problems: string[] = ["not read yet"];
      while (history.now() - t0 < boundMs) {
        const o = sample();
        try {
          const s = await readStoreView(store, AbortSignal.timeout(5000));
          problems = settledProblems(o, s, pendingOps());
        } catch (err) {
          problems = [`store unreadable: ${(err as Error).message}`];
        }
        if (problems.length === 0) {
          const took = history.now() - t0;
          history.add("note", `settled ${took} ms after the heal`);
          return took;
        }
        await new Promise((r) => setTimeout(r, 500));
      }
      for (const p of problems) history.violation(`not settled within ${boundMs} ms`, p);
      return history.now() - t0;
    },
  };
}

export type Checker = ReturnType<typeof createChecker>;
