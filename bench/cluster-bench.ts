// Cluster benchmark (issue 7): a simulated cluster of 1,000 nodes and 20,000
// VMs on the embedded SQLite store. Measures
//   - heartbeats per second the inventory absorbs (each a compare-and-swap
//     write of the node's record with its 20 VMs, durable before it returns),
//     with 64 heartbeats in flight as from 1,000 independent nodes;
//   - planning latency of PrepareMigration with no target given (every one
//     of the 999 other nodes checked), p50 and p99;
//   - the time to list every VM (Inventory.listVms: each node's report
//     merged, each VM once), which every /metrics scrape pays for the
//     debvisor_vms gauge, median of 15 calls;
//   - the time to list every node with its readiness (Inventory.listNodes),
//     which the readiness events and the failover controller each do every
//     2 s, median of 15 calls;
//   - the time to find one VM (Inventory.findVm), which every VM call pays
//     (tenancy, planning, failover, lifecycle), and VmService.GetVm's
//     handler (the VM as the API shows it, its node's readiness applied),
//     median of 15 calls each.
// Runs in this process on compiled JS; bounded in count and time.
//
//   npm run bench:cluster
//   node dist/bench/cluster-bench.js --rounds 3 --seconds 5 --plans 300
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { create } from "@bufbuild/protobuf";
import {
  createInventory,
  createLocalExecutors,
  createVmService,
  startClusterRuntime,
} from "../src/cluster/index.js";
import { handlerCall, silentLogger, systemClock } from "../src/core/index.js";
import { createSimulation } from "../src/drivers/index.js";
import { VMRefSchema } from "../src/gen/debvisor/v1/migration_pb.js";
import { createSqliteStore } from "../src/store/index.js";
import { median } from "./bench-support.js";

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "3" },
    seconds: { type: "string", default: "5" },
    plans: { type: "string", default: "300" },
    out: { type: "string", default: "bench/results" },
  },
});
const ROUNDS = Math.min(10, Math.max(1, Number(values.rounds)));
const SECONDS = Math.min(60, Math.max(1, Number(values.seconds)));
const PLANS = Math.min(5000, Math.max(10, Number(values.plans)));
const NODES = 1000;
const VMS_PER_NODE = 20;
const IN_FLIGHT = 64;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

const dir = mkdtempSync(join(tmpdir(), "dv-cluster-bench-"));
const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
const sim = createSimulation({
  nodes: NODES,
  vmsPerNode: VMS_PER_NODE,
  clock: systemClock,
  fenceDelayMs: 3_600_000,
});
const inventory = createInventory({ store, clock: systemClock, heartbeatTtlMs: 3_600_000 });
const ids = sim.nodes.map((n) => n.id?.id ?? "");
const t0 = performance.now();
await Promise.all(sim.nodes.map((n) => inventory.register(n, "simulation")));
for (const id of ids) {
  const h = sim.heartbeat(id);
  if (h !== undefined) await inventory.heartbeat(h);
}
console.error(
  `loaded ${NODES} nodes, ${(await inventory.listVms()).length} vms in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
);
const runtime = await startClusterRuntime({
  store,
  inventory,
  executors: createLocalExecutors((id) => sim.driver(id)),
  replicas: { hasReplica: async () => true },
  clock: systemClock,
  logger: silentLogger,
  fenceDelayMs: 3_600_000,
});

/** VmService.GetVm's handler, called as the transport calls it for a cluster-wide caller. */
const getVmCall = handlerCall(
  createVmService({ inventory, store, clock: systemClock, fenceDelayMs: 3_600_000 }),
  "GetVm",
);
const getVm = (vmId: string) => getVmCall(create(VMRefSchema, { vmId }));

async function heartbeats(): Promise<{ perSec: number; count: number }> {
  let next = 0;
  let count = 0;
  const until = performance.now() + SECONDS * 1000;
  const worker = async () => {
    while (performance.now() < until && count < 2_000_000) {
      const id = ids[next++ % ids.length] ?? "";
      const h = sim.heartbeat(id);
      if (h === undefined) continue;
      await inventory.heartbeat(h);
      count++;
    }
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  return { perSec: count / ((performance.now() - start) / 1000), count };
}

async function planning(vmIds: string[]): Promise<{ p50: number; p99: number; allowed: number }> {
  const times: number[] = [];
  let allowed = 0;
  for (const vmId of vmIds) {
    const start = performance.now();
    const plan = await runtime.engine.plan({ vmId, allowDowntime: true, tenant: undefined });
    times.push(performance.now() - start);
    if (plan.allowed) allowed++;
  }
  times.sort((a, b) => a - b);
  return { p50: percentile(times, 50), p99: percentile(times, 99), allowed };
}

/** Median time of 15 calls of `list`. */
async function listing(list: () => Promise<unknown>): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < 15; i++) {
    const start = performance.now();
    await list();
    times.push(performance.now() - start);
  }
  return median(times);
}

const allVms = (await inventory.listVms()).map((v) => v.id);
const hb: number[] = [];
const lists: number[] = [];
const nodeLists: number[] = [];
const finds: number[] = [];
const gets: number[] = [];
const p50s: number[] = [];
const p99s: number[] = [];
let allowedTotal = 0;
for (let round = 0; round < ROUNDS; round++) {
  const h = await heartbeats();
  const pick = Array.from(
    { length: PLANS },
    (_, i) => allVms[(i * 7919 + round * 104_729) % allVms.length] ?? "",
  );
  const p = await planning(pick);
  const l = await listing(() => inventory.listVms());
  const n = await listing(() => inventory.listNodes());
  const f = await listing(() => inventory.findVm(pick[0] ?? ""));
  const g = await listing(() => getVm(pick[1] ?? ""));
  lists.push(l);
  finds.push(f);
  gets.push(g);
  nodeLists.push(n);
  hb.push(h.perSec);
  p50s.push(p.p50);
  p99s.push(p.p99);
  allowedTotal += p.allowed;
  console.error(
    `round ${round + 1}: ${h.perSec.toFixed(0)} heartbeats/s (${h.count}), plan p50 ${p.p50.toFixed(2)} ms p99 ${p.p99.toFixed(2)} ms, ${p.allowed}/${PLANS} allowed, every VM listed in ${l.toFixed(1)} ms, every node in ${n.toFixed(2)} ms, one VM found in ${f.toFixed(2)} ms, GetVm ${g.toFixed(2)} ms`,
  );
}
if (allowedTotal === 0)
  throw new Error("no plan was allowed: the benchmark measured only refusals");

const result = {
  benchmark: "cluster",
  date: new Date().toISOString(),
  node: process.version,
  nodes: NODES,
  vms: allVms.length,
  rounds: ROUNDS,
  secondsPerRound: SECONDS,
  plansPerRound: PLANS,
  heartbeatsPerSecMedian: Math.round(median(hb)),
  planP50MsMedian: Number(median(p50s).toFixed(2)),
  planP99MsMedian: Number(median(p99s).toFixed(2)),
  listVmsMsMedian: Number(median(lists).toFixed(1)),
  listNodesMsMedian: Number(median(nodeLists).toFixed(2)),
  findVmMsMedian: Number(median(finds).toFixed(2)),
  getVmMsMedian: Number(median(gets).toFixed(2)),
  perRound: {
    heartbeatsPerSec: hb.map(Math.round),
    planP50Ms: p50s,
    planP99Ms: p99s,
    listVmsMs: lists,
    listNodesMs: nodeLists,
    findVmMs: finds,
    getVmMs: gets,
  },
};
console.log("| measure | median of rounds |");
console.log("| --- | ---: |");
console.log(
  `| heartbeats absorbed per second (1,000 nodes, 20 VMs each, SQLite, ${IN_FLIGHT} in flight) | ${result.heartbeatsPerSecMedian} |`,
);
console.log(`| PrepareMigration, no target (999 candidates), p50 | ${result.planP50MsMedian} ms |`);
console.log(`| PrepareMigration, no target (999 candidates), p99 | ${result.planP99MsMedian} ms |`);
console.log(
  `| every VM listed (20,000; each /metrics scrape does this once) | ${result.listVmsMsMedian} ms |`,
);
console.log(
  `| every node listed (1,000; the readiness and failover passes do this every 2 s each) | ${result.listNodesMsMedian} ms |`,
);
console.log(
  `| one VM found (every VM call does this at least once) | ${result.findVmMsMedian} ms |`,
);
console.log(`| VmService.GetVm's handler | ${result.getVmMsMedian} ms |`);
mkdirSync(values.out, { recursive: true });
const file = join(values.out, `cluster-${result.date.replace(/[:.]/g, "").slice(0, 17)}.json`);
writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
console.error(`wrote ${file}`);
await runtime.close();
sim.close();
inventory.close();
await store.close();
