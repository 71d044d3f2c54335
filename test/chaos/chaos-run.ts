import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { NodeReadiness } from "../../src/gen/debvisor/v1/node_pb.js";
import { createEtcdStore, type KvStore } from "../../src/store/index.js";
import { startEtcd } from "../helpers/etcd-server.js";
import { eventually } from "../helpers/eventually.js";
import { checkActsAudited } from "./chaos-audited.js";
import { CHAOS_BOUNDS } from "./chaos-bounds.js";
import { createChecker } from "./chaos-checker.js";
import { type ChaosCluster, startChaosCluster } from "./chaos-cluster.js";
import { createCutOffWatch } from "./chaos-cutoff.js";
import { createFaults } from "./chaos-faults.js";
import { createHistory } from "./chaos-history.js";
import { createObserver, type Observer } from "./chaos-observer.js";
import { createOutcomes } from "./chaos-outcomes.js";
import { createRandom } from "./chaos-random.js";
import { readStoreView } from "./chaos-store-view.js";
import { createWorkload } from "./chaos-workload.js";

/** What one chaos run did and found. */
export interface ChaosResult {
  readonly seed: number;
  readonly seconds: number;
  readonly ok: boolean;
  /** Operations issued (calls), and how the operations and migrations they started ended. */
  readonly operations: number;
  readonly outcomes: { succeeded: number; failed: number; cancelled: number; checked: number };
  /** Faults injected and healed, by kind. */
  readonly faults: Record<string, number>;
  readonly samples: number;
  /** VMs seen running elsewhere while the node they ran on was cut off (see chaos-cutoff.ts). */
  readonly cutOffFailovers: number;
  /** How long after the heal everything had settled. */
  readonly settleMs: number;
  /** One line per violation, then the history; empty when ok. */
  readonly report: string;
  readonly summary: string;
}

const NODES = ["node-a", "node-b", "node-c", "node-d"];

/** A running chaos cluster and the tools every seed's run uses. */
interface Session {
  readonly cluster: ChaosCluster;
  readonly store: KvStore;
  readonly observer: Observer;
  readonly log: (line: string) => void;
}

/**
 * Seeded chaos runs, one after another on one cluster (one etcd, two
 * daemons, four agents): for each seed, creates its starting VMs, then for
 * `seconds` issues random operations through both daemons and injects
 * random faults while the checker samples every node; then heals
 * everything and holds the cluster to its liveness bounds before the next
 * seed. Everything random comes from the seed; the timing of a loaded
 * machine does not, so a seed is a schedule, not a replay.
 */
export async function runChaos(options: {
  readonly seeds: readonly number[];
  readonly seconds: number;
  readonly startVms?: number;
  readonly log?: (line: string) => void;
}): Promise<ChaosResult[]> {
  const log = options.log ?? (() => {});
  const etcd = await startEtcd();
  if (etcd === undefined) throw new Error("etcd is not installed (apt-get install etcd-server)");
  const dir = mkdtempSync(join(tmpdir(), `dv-chaos-${options.seeds.join("-")}-`));
  const t0 = Date.now();
  const cluster = await startChaosCluster(dir, etcd, NODES);
  const store = createEtcdStore({ endpoints: [etcd.endpoint], prefix: cluster.prefix });
  const observer = createObserver(
    new Map([...cluster.agents].map(([n, a]) => [n, a.dir])),
    cluster.sharedDir,
  );
  const results: ChaosResult[] = [];
  try {
    await eventually(
      async () => {
        const list = await cluster.daemons[0]?.clients.nodes.listNodes({}, { timeoutMs: 5000 });
        const ready = list?.nodes.filter((n) => n.readiness === NodeReadiness.READY).length;
        if (ready !== NODES.length) throw new Error(`${ready} of ${NODES.length} nodes READY`);
      },
      { timeoutMs: 60_000, intervalMs: 250 },
    );
    log(`cluster up in ${dir} after ${Date.now() - t0} ms`);
    for (const seed of options.seeds) {
      const r = await runSeed(
        { cluster, store, observer, log },
        seed,
        options.seconds,
        options.startVms,
      );
      log(r.summary);
      results.push(r);
      if (!r.ok) break;
    }
    return results;
  } finally {
    observer.close();
    await cluster.close();
    await store.close();
    await etcd.stop();
    if (results.every((r) => r.ok)) rmSync(dir, { recursive: true, force: true });
    else log(`cluster directory kept: ${dir}`);
  }
}

async function runSeed(
  { cluster, store, observer, log }: Session,
  seed: number,
  seconds: number,
  startVms = 4,
): Promise<ChaosResult> {
  const history = createHistory(seed);
  // Separate streams, so the operations drawn do not shift the faults drawn.
  const opsRandom = createRandom(seed);
  const faultRandom = createRandom(seed ^ 0x5bd1e995);
  const checker = createChecker({
    observer,
    store,
    history,
    agent: (node) => cluster.agents.get(node)?.state ?? "dead",
  });
  const haNodes = async () => {
    const o = observer.observe();
    const s = await readStoreView(store, AbortSignal.timeout(5000));
    return NODES.filter((n) =>
      [...s.vms].some(
        ([vm, r]) =>
          r.ha && r.desiredRunning && r.node === n && (o.running.get(vm) ?? []).includes(n),
      ),
    );
  };
  const faults = createFaults({ cluster, random: faultRandom, history, nodes: NODES, haNodes });
  const cutOff = createCutOffWatch(faults.cutOff, history);
  const outcomes = createOutcomes({ cluster, store, checker, history, lastFaultAt: faults.lastAt });
  const workload = createWorkload({ cluster, random: opsRandom, history, outcomes, nodes: NODES });
  await workload.seed(startVms);
  await eventually(
    async () => {
      await outcomes.pollAll();
      if (outcomes.pending().length > 0) throw new Error(outcomes.pending().join("; "));
    },
    { timeoutMs: 30_000, intervalMs: 250 },
  );
  history.add("note", `seed ${seed}: chaos for ${seconds} s`);
  const stopAt = Date.now() + seconds * 1000;
  let running = true;
  const loop = async (everyMs: () => number, body: () => unknown) => {
    while (running) {
      await body();
      await sleep(everyMs());
    }
  };
  const sampler = loop(
    () => CHAOS_BOUNDS.sampleMs,
    () => cutOff.sample(checker.sample()),
  );
  const poller = loop(
    () => 500,
    () => outcomes.pollAll(),
  );
  const ops = loop(
    () => opsRandom.int(150, 700),
    () => workload.step(),
  );
  // The first fault comes after a quiet second; then one every 1 to 3 s.
  await sleep(1000);
  let progressAt = Date.now() + 60_000;
  let told = 0;
  while (Date.now() < stopAt) {
    await faults.step();
    await sleep(faultRandom.int(1000, 3000));
    if (Date.now() >= progressAt) {
      progressAt += 60_000;
      log(
        `seed ${seed}: ${Math.round(history.now() / 1000)} s, ${workload.issued()} operations, ${history.entries.filter((e) => e.kind === "fault").length} fault lines, ${history.violations.length} violation(s)`,
      );
      // New violations as they come: a long run is read while it runs.
      for (const v of history.violations.slice(told))
        log(`  violation at ${(v.t / 1000).toFixed(1)} s: ${v.property}: ${v.text}`);
      told = history.violations.length;
    }
  }
  running = false;
  await ops;
  await faults.healAll();
  await workload.uncordonAll();
  running = true;
  const keepPolling = loop(
    () => 500,
    () => outcomes.pollAll(),
  );
  const settleMs = await checker.settle(
    Math.max(CHAOS_BOUNDS.haRestoreMs, CHAOS_BOUNDS.operationFinalMs),
    outcomes.pending,
  );
  running = false;
  await Promise.all([sampler, poller, keepPolling]);
  const audited = await checkActsAudited(
    store,
    ["rpcd-a", "rpcd-b"].map((d) => join(cluster.dir, d)),
    history,
    CHAOS_BOUNDS.auditedMs,
  );
  const ok = history.violations.length === 0;
  const faultCounts = Object.fromEntries(history.counts("fault"));
  const c = outcomes.counts;
  const summary = `seed ${seed}, ${seconds} s: ${ok ? "ok" : `${history.violations.length} violation(s)`}; ${workload.issued()} operations issued (${c.succeeded} succeeded, ${c.failed} failed, ${c.cancelled} cancelled; ${c.checked} outcomes checked against the hypervisors); faults ${JSON.stringify(faultCounts)}; ${cutOff.count()} vm(s) failed over away from a cut-off node; ${audited} restart(s) of the controller checked against the audit trail; ${checker.samples()} samples; settled ${settleMs} ms after the heal`;
  return {
    seed,
    seconds,
    ok,
    operations: workload.issued(),
    outcomes: { ...c },
    faults: faultCounts,
    samples: checker.samples(),
    cutOffFailovers: cutOff.count(),
    settleMs,
    report: ok ? "" : history.render(join(tmpdir(), `dv-chaos-history-${seed}.log`)),
    summary,
  };
}
