// Store benchmark: sustained put throughput and latency for 1 KiB values with
// 1, 16 and 64 concurrent writers, on SQLite and on etcd (started here on
// loopback when installed). Variants alternate within each round (A B A B ...)
// and the table reports medians over the rounds.
//
//   npm run bench:store            (3 rounds of 3 s per variant)
//   node dist/bench/store-bench.js --rounds 5 --seconds 2
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { silentLogger } from "../src/core/index.js";
import { createEtcdStore, createSqliteStore, type KvStore } from "../src/store/index.js";
import { startEtcd } from "../test/helpers/etcd-server.js";
import { median, percentile } from "./bench-support.js";

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "3" },
    seconds: { type: "string", default: "3" },
    out: { type: "string", default: "bench/results" },
  },
});
const ROUNDS = Math.min(20, Math.max(1, Number(values.rounds)));
const SECONDS = Math.min(60, Math.max(0.5, Number(values.seconds)));
const CONCURRENCY = [1, 16, 64];
/** Keys are overwritten within a working set so the store does not grow without bound. */
const WORKING_SET = 10_000;
const MAX_OPS = 2_000_000;

interface Sample {
  opsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  ops: number;
}

async function run(store: KvStore, writers: number): Promise<Sample> {
  const value = randomBytes(1024);
  const latencies: number[] = [];
  const deadline = performance.now() + SECONDS * 1000;
  let n = 0;
  const writer = async (w: number) => {
    while (performance.now() < deadline && n < MAX_OPS) {
      const key = `bench/${w}/${n++ % WORKING_SET}`;
      const t0 = performance.now();
      await store.put(key, value);
      latencies.push(performance.now() - t0);
    }
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: writers }, (_, w) => writer(w)));
  const elapsed = (performance.now() - start) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    opsPerSec: latencies.length / elapsed,
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
    ops: latencies.length,
  };
}

const stores: { name: string; store: KvStore }[] = [
  {
    name: "sqlite",
    store: createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-bench-")), "state.db"),
      logger: silentLogger,
    }),
  },
];
const etcd = await startEtcd();
if (etcd === undefined)
  console.error("etcd is not installed: benchmarking SQLite only (apt-get install etcd-server)");
else
  stores.push({
    name: "etcd",
    store: createEtcdStore({ endpoints: [etcd.endpoint], prefix: "/bench/" }),
  });

const samples = new Map<string, Sample[]>();
for (let round = 1; round <= ROUNDS; round++) {
  for (const writers of CONCURRENCY) {
    for (const { name, store } of stores) {
      const s = await run(store, writers);
      const id = `${name}/${writers}`;
      samples.set(id, [...(samples.get(id) ?? []), s]);
      console.error(
        `round ${round} ${id.padEnd(10)} ${s.opsPerSec.toFixed(0).padStart(7)} puts/s  p99 ${s.p99Ms.toFixed(2)} ms`,
      );
    }
  }
}
for (const { store } of stores) await store.close();
await etcd?.stop();

const rows = [...samples.entries()].map(([id, ss]) => {
  const [backend, writers] = id.split("/");
  return {
    backend,
    writers: Number(writers),
    putsPerSec: Math.round(median(ss.map((s) => s.opsPerSec))),
    p50Ms: Number(median(ss.map((s) => s.p50Ms)).toFixed(3)),
    p99Ms: Number(median(ss.map((s) => s.p99Ms)).toFixed(3)),
    rounds: ss.length,
  };
});
const lines = [
  `Store puts, 1 KiB values, ${SECONDS} s per variant, median of ${ROUNDS} alternating rounds (${cpus().length} CPUs, Node ${process.versions.node})`,
  "",
  "| backend | writers | puts/s | p50 ms | p99 ms |",
  "|---|---:|---:|---:|---:|",
  ...rows.map((r) => `| ${r.backend} | ${r.writers} | ${r.putsPerSec} | ${r.p50Ms} | ${r.p99Ms} |`),
];
console.log(lines.join("\n"));
mkdirSync(values.out as string, { recursive: true });
const file = join(
  values.out as string,
  `store-${new Date().toISOString().slice(0, 19).replace(/:/g, "")}.json`,
);
writeFileSync(
  file,
  `${JSON.stringify({ benchmark: "store-put", seconds: SECONDS, rounds: ROUNDS, node: process.versions.node, rows, samples: Object.fromEntries(samples) }, null, 2)}\n`,
);
console.log(`\nwritten: ${file}`);
