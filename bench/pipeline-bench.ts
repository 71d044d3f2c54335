// Pipeline cost: ListNodes (10 nodes) over TLS with h2load, through the full
// security pipeline (per-source rate limit, API key authentication, RBAC,
// per-principal rate limit, validation) versus the same server code with no
// stages at all. Variants alternate (A B A B ...), medians reported.
//
//   npm run bench:pipeline          (needs h2load: apt-get install nghttp2-client)
//   node dist/bench/pipeline-bench.js --rounds 5 --requests 30000
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { createAuditStages, openAuditLog } from "../src/audit/index.js";
import { createServiceClient } from "../src/client/index.js";
import { createDomainServices, createInventory } from "../src/cluster/index.js";
import {
  type CallObserver,
  type Stage,
  silentLogger,
  systemClock,
  validationStage,
} from "../src/core/index.js";
import { HealthSchema, NodeInfoSchema, NodeService } from "../src/gen/debvisor/v1/node_pb.js";
import { createCertificateAuthority, loadCertificateAuthority } from "../src/pki/index.js";
import {
  createAccessPolicy,
  createApiKeys,
  createAuthenticationStage,
  createAuthorizationStage,
  createLockout,
  createRateLimitStages,
} from "../src/security/index.js";
import { parseConfig, startRpcServer } from "../src/server/index.js";
import { createSqliteStore } from "../src/store/index.js";
import { haveH2load, median, runH2load } from "./bench-support.js";

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "3" },
    requests: { type: "string", default: "20000" },
    clients: { type: "string", default: "8" },
    streams: { type: "string", default: "10" },
    out: { type: "string", default: "bench/results" },
  },
});
const ROUNDS = Math.min(10, Math.max(1, Number(values.rounds)));
const N = Math.min(500_000, Math.max(1000, Number(values.requests)));
const C = Number(values.clients);
const M = Number(values.streams);

if (!(await haveH2load())) {
  console.error("h2load is not installed: apt-get install nghttp2-client");
  process.exit(2);
}

const dir = mkdtempSync(join(tmpdir(), "dv-pipebench-"));
const ca = await createCertificateAuthority({ commonName: "Bench CA" });
const server = await (await loadCertificateAuthority(ca)).issue({
  commonName: "localhost",
  usage: "server",
  altNames: ["localhost", "127.0.0.1"],
});
const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
const inventory = createInventory({ store, clock: systemClock });
for (let i = 1; i <= 10; i++) {
  const id = `node-${String(i).padStart(2, "0")}`;
  await inventory.register(
    create(NodeInfoSchema, {
      id: { id },
      hostname: `hv${i}.bench`,
      zone: "z1",
      labels: { rack: "r1" },
    }),
    "bench",
  );
  await inventory.heartbeat(
    create(HealthSchema, {
      nodeId: { id },
      cpuLoad: 1.5,
      memUsedPct: 40,
      timestamp: { seconds: 1n },
    }),
  );
}
const apiKeys = createApiKeys(store, systemClock);
const key = await apiKeys.create({ principal: "bench", roles: ["viewer"], createdBy: "bench" });
const policy = createAccessPolicy({});
const unlimited = { ratePerSecond: 1e9, burst: 1e9 };
const rate = createRateLimitStages({
  clock: systemClock,
  perSource: unlimited,
  perPrincipal: unlimited,
  perRole: {},
  methodCost: {},
  policy: () => policy,
});
const config = parseConfig({});

/** Counts calls that finished OK, so a run counts only if the server saw every success h2load reports. */
function counter(): CallObserver & { ok: number; failed: number } {
  return {
    ok: 0,
    failed: 0,
    onStart() {},
    onEnd(_ctx, error) {
      if (error === undefined) this.ok++;
      else this.failed++;
    },
  };
}

async function serve(stages: Stage[]) {
  const observer = counter();
  const rpc = await startRpcServer({
    listen: "127.0.0.1:0",
    tls: { certPem: server.certPem, keyPem: server.keyPem, clientCaPem: ca.certPem },
    tlsOptions: config.tls,
    limits: { ...config.limits, maxConcurrentStreams: 1000 },
    services: createDomainServices({
      inventory,
      storage: { listSnapshots: async () => undefined },
      store,
      clock: systemClock,
    }),
    stages,
    observer,
    logger: silentLogger,
  });
  return { rpc, observer };
}

const auditLog = await openAuditLog({ path: join(dir, "audit.log"), logger: silentLogger });
const audit = createAuditStages({ log: auditLog });
const securityStages = (): Stage[] => [
  rate.perSource,
  createAuthenticationStage({
    apiKeys,
    jwt: () => undefined,
    lockout: createLockout({ clock: systemClock }),
  }),
  createAuthorizationStage(() => policy),
  rate.perPrincipal,
  validationStage,
];
const variants = {
  audited: await serve([audit.outer, ...securityStages(), audit.beforeAct]),
  pipeline: await serve(securityStages()),
  bare: await serve([]),
};

// Before measuring: a real client gets gRPC status 0 and 10 nodes from both (HTTP 200 alone proves nothing).
for (const [name, v] of Object.entries(variants)) {
  const ch = new grpc.Client(v.rpc.address, grpc.credentials.createSsl(Buffer.from(ca.certPem)), {
    "grpc.ssl_target_name_override": "localhost",
  });
  const md = new grpc.Metadata();
  md.set("authorization", `Bearer ${key.token}`);
  const list = await createServiceClient(NodeService, ch).listNodes({}, { metadata: md });
  ch.close();
  if (list.nodes.length !== 10)
    throw new Error(`${name}: expected 10 nodes, got ${list.nodes.length}`);
}

const body = join(dir, "listnodes.bin");
writeFileSync(body, Buffer.from([0, 0, 0, 0, 0])); // one gRPC frame: an empty ListNodesRequest
const results: Record<string, ReturnType<typeof Object>[]> = {
  audited: [],
  pipeline: [],
  bare: [],
};
for (let round = 1; round <= ROUNDS; round++) {
  // Rotate the order each round so no variant always runs first (or last) on a noisy machine.
  const entries = Object.entries(variants);
  const order = [
    ...entries.slice((round - 1) % entries.length),
    ...entries.slice(0, (round - 1) % entries.length),
  ];
  for (const [name, v] of order) {
    const before = v.observer.ok;
    const args = [
      "-n",
      String(N),
      "-c",
      String(C),
      "-m",
      String(M),
      "-H",
      "content-type: application/grpc",
      "-H",
      "te: trailers",
      "-H",
      `authorization: Bearer ${key.token}`,
      "-d",
      body,
      `https://${v.rpc.address}/debvisor.v1.NodeService/ListNodes`,
    ];
    const r = await runH2load(args, join(dir, `${name}-${round}.log`));
    const served = v.observer.ok - before;
    if (r.succeeded !== N || served !== N || v.observer.failed !== 0) {
      throw new Error(
        `${name} round ${round}: h2load ${r.succeeded}/${N} succeeded, server counted ${served} OK and ${v.observer.failed} failed calls`,
      );
    }
    (results[name] as object[]).push(r);
    console.error(
      `round ${round} ${name.padEnd(8)} ${r.reqPerSec.toFixed(0).padStart(7)} req/s  p50 ${r.p50Ms.toFixed(2)} ms  p99 ${r.p99Ms.toFixed(2)} ms`,
    );
  }
}
for (const v of Object.values(variants)) await v.rpc.shutdown(1000);
const auditStats = auditLog.stats();
await auditLog.close();
await store.close();

const summary = Object.fromEntries(
  Object.entries(results).map(([name, rs]) => {
    const list = rs as unknown as { reqPerSec: number; p50Ms: number; p99Ms: number }[];
    return [
      name,
      {
        reqPerSec: Math.round(median(list.map((r) => r.reqPerSec))),
        p50Ms: median(list.map((r) => r.p50Ms)),
        p99Ms: median(list.map((r) => r.p99Ms)),
      },
    ];
  }),
) as Record<"audited" | "pipeline" | "bare", { reqPerSec: number; p50Ms: number; p99Ms: number }>;
const cost = 1 - summary.pipeline.reqPerSec / summary.bare.reqPerSec;
const auditKept = summary.audited.reqPerSec / summary.pipeline.reqPerSec;
const perFsync = auditStats.records / Math.max(1, auditStats.syncs);
const command = `h2load -n ${N} -c ${C} -m ${M} -H 'content-type: application/grpc' -H 'te: trailers' -H 'authorization: Bearer <key>' -d <empty ListNodes frame> https://127.0.0.1:PORT/debvisor.v1.NodeService/ListNodes`;
console.log(
  [
    `ListNodes (10 nodes) over TLS, ${N} requests per run, median of ${ROUNDS} alternating rounds (${cpus().length} CPUs, Node ${process.versions.node})`,
    `load: ${command}`,
    "",
    "| variant | req/s | p50 ms | p99 ms |",
    "|---|---:|---:|---:|",
    `| full pipeline + durable audit (fsync before every response) | ${summary.audited.reqPerSec} | ${summary.audited.p50Ms.toFixed(2)} | ${summary.audited.p99Ms.toFixed(2)} |`,
    `| full pipeline (API key, RBAC, rate limits, validation) | ${summary.pipeline.reqPerSec} | ${summary.pipeline.p50Ms.toFixed(2)} | ${summary.pipeline.p99Ms.toFixed(2)} |`,
    `| pipeline off | ${summary.bare.reqPerSec} | ${summary.bare.p50Ms.toFixed(2)} | ${summary.bare.p99Ms.toFixed(2)} |`,
    "",
    `pipeline cost: ${(cost * 100).toFixed(1)}% of throughput (target: under 15%)`,
    `durable audit keeps ${(auditKept * 100).toFixed(1)}% of the pipeline's throughput (target: at least 85%); ${perFsync.toFixed(1)} records per fsync on average (${auditStats.records} records, ${auditStats.syncs} fsyncs)`,
  ].join("\n"),
);
mkdirSync(values.out as string, { recursive: true });
const file = join(
  values.out as string,
  `pipeline-${new Date().toISOString().slice(0, 19).replace(/:/g, "")}.json`,
);
writeFileSync(
  file,
  `${JSON.stringify({ benchmark: "pipeline-cost", requests: N, clients: C, streams: M, rounds: ROUNDS, command, summary, costFraction: cost, auditKeptFraction: auditKept, auditRecordsPerFsync: perFsync, auditStats, runs: results }, null, 2)}\n`,
);
console.log(`written: ${file}`);
