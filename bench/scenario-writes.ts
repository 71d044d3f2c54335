// Writes: Heartbeat from 1,000 distinct registered nodes against the full
// daemon, each node with its own API key (role node, valid for its own node
// only), from the Node client (h2load sends one credential and one body).
// Each call is a store write (compare-and-swap, fsync shared by concurrent
// writes) and two durable audit records (the request before it acts, the
// outcome after). Verified beyond the call counters: the audit trail grew by
// exactly two records a call, and afterwards every node is READY.
import { join } from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { systemClock } from "../src/core/index.js";
import {
  HealthAckSchema,
  HealthSchema,
  NodeListSchema,
  NodeReadiness,
} from "../src/gen/debvisor/v1/node_pb.js";
import { FULL, seedStore } from "./bench-fixture.js";
import { row, type ScenarioResult, summarize } from "./bench-report.js";
import type { BenchServer } from "./bench-servers.js";
import { median, metricValue } from "./bench-support.js";
import { type LoadPlan, openSession, unaryCall } from "./grpc-load-client.js";
import { HEARTBEAT, LIST_NODES, measureNodeClient, type Sample } from "./measure.js";
import { alternateRounds, type Scenario, scaled, withServers } from "./scenario.js";

const NODES = 1000;
const CONNECTIONS = 4;
const STREAMS = 16;
const CALLS = 8000;

/** Audit records and fsyncs so far, from the daemon's /metrics. */
async function auditCounters(server: BenchServer): Promise<{ records: number; syncs: number }> {
  const text = await server.metrics();
  return {
    records: metricValue(text, "debvisor_audit_records_total") ?? Number.NaN,
    syncs: metricValue(text, "debvisor_audit_fsyncs_total") ?? Number.NaN,
  };
}

export const writesScenario: Scenario = {
  id: "writes",
  about: `Heartbeat from ${NODES} distinct registered nodes through the full daemon`,
  async run(ctx) {
    ctx.log(`  registering ${NODES} nodes, each with its own API key`);
    const storePath = join(ctx.scratch, "write-state.db");
    const seeded = await seedStore(storePath, NODES, systemClock, true);
    const calls = scaled(ctx, CALLS);
    const plan = (n: number): LoadPlan => ({
      path: HEARTBEAT.path,
      calls: n,
      connections: CONNECTIONS,
      streams: STREAMS,
      timeoutMs: 180_000,
      request(i) {
        const node = seeded.nodes[i % NODES] as { id: string; token: string };
        const now = Date.now();
        const health = create(HealthSchema, {
          nodeId: { id: node.id },
          cpuLoad: (i % 80) / 10,
          memUsedPct: 40 + (i % 20),
          diskUsedPct: 55,
          netRttMs: 0.4,
          timestamp: { seconds: BigInt(Math.floor(now / 1000)), nanos: (now % 1000) * 1e6 },
        });
        return { message: toBinary(HealthSchema, health), bearer: node.token };
      },
      check(message) {
        const ack = fromBinary(HealthAckSchema, message);
        return ack.message === "recorded" ? undefined : `heartbeat not recorded: ${ack.message}`;
      },
      checkEvery: 50,
    });
    const perFsync: number[] = [];
    const { runs, ready } = await withServers(ctx, async (start) => {
      const server = await start.daemon("writes", FULL, storePath);
      const target = { address: server.address, caPem: ctx.fixture.caPem };
      const measure = async (n: number): Promise<Sample> => {
        const before = await auditCounters(server);
        const s = await measureNodeClient(server, HEARTBEAT, target, plan(n));
        const after = await auditCounters(server);
        const records = after.records - before.records;
        perFsync.push(records / Math.max(1, after.syncs - before.syncs));
        return records === 2 * n
          ? s
          : {
              ...s,
              problems: [...s.problems, `audit grew by ${records} records, expected ${2 * n}`],
            };
      };
      // One heartbeat per node first: every key's first use also records when it was last used.
      const warm = await measure(NODES);
      if (warm.problems.length > 0) ctx.log(`  warm-up: ${warm.problems.join("; ")}`);
      perFsync.length = 0;
      const runs = await alternateRounds(ctx, [{ name: "heartbeat" }], () => measure(calls));
      // Liveness: every node's heartbeat landed.
      const session = await openSession(target);
      const listed = await unaryCall(
        session,
        LIST_NODES.path,
        new Uint8Array(0),
        seeded.viewer,
        30_000,
      );
      session.close();
      if ("problem" in listed) throw new Error(`ListNodes after the heartbeats: ${listed.problem}`);
      const nodes = fromBinary(NodeListSchema, listed.message).nodes;
      const ready = nodes.filter((n) => n.readiness === NodeReadiness.READY).length;
      if (nodes.length !== NODES || ready !== NODES)
        throw new Error(
          `after the heartbeats ${ready} of ${nodes.length} nodes are READY, expected ${NODES}`,
        );
      return { runs, ready };
    });
    const m = summarize(runs.heartbeat ?? []);
    return {
      id: this.id,
      rows: [
        row(
          "Writes",
          `Heartbeat from ${NODES} nodes (own API key each), full daemon`,
          m,
          `2 durable audit records per call, ${median(perFsync).toFixed(1)} records per audit fsync; ${ready}/${NODES} nodes READY after`,
        ),
      ],
      targets: [],
      commands: [
        `node client (bench/grpc-load-client.ts): ${calls} unary ${HEARTBEAT.path} calls, call i from node-(i mod ${NODES}) with 'authorization: Bearer <that node's API key>' and a Health of that node stamped now, ${CONNECTIONS} TLS 1.3 connections x ${STREAMS} calls in flight`,
      ],
      runs,
      details: { calls, nodes: NODES, auditRecordsPerFsync: perFsync, readyAfter: ready },
    } satisfies ScenarioResult;
  },
};
