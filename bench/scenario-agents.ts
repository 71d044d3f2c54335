// Agents: N node agents hold AgentService.Connect streams to one daemon
// (dev mode, etcd store), heartbeat every 10 s with 20 VMs each, while a
// burst of 1,000 operations is written to the store (createAgentOperations,
// as any control-plane replica would) and delivered by the daemon to the
// agents. The agents live in one load client process (agent-load-client.ts).
// Measured: the daemon's RSS growth per stream, its CPU time per heartbeat,
// and dispatch latency from submit to the agent's receipt. Verified: every
// stream welcomed, every operation received and its result recorded (DONE).
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createAgentOperations } from "../src/cluster/index.js";
import { systemClock } from "../src/core/index.js";
import { OperationPhase } from "../src/gen/debvisor/store/v1/agent_records_pb.js";
import { OperationKind } from "../src/gen/debvisor/v1/agent_pb.js";
import { createEtcdStore } from "../src/store/index.js";
import { devDaemonArgs, startDaemonProcess } from "../test/helpers/daemon-process.js";
import { startEtcd } from "../test/helpers/etcd-server.js";
import { type CeilingRun, failedCeilingRun, measureAgentCeiling } from "./agent-ceiling.js";
import { type AgentLoad, heapKib, rssKib, startAgentLoad } from "./agent-load.js";
import { nodeName, preciseNow } from "./agent-load-client.js";
import { row, type ScenarioResult, summarize, target } from "./bench-report.js";
import { profileArgs } from "./bench-servers.js";
import { cpuSeconds, median, percentile, roundOrder } from "./bench-support.js";
import type { Sample } from "./measure.js";
import type { Scenario, ScenarioContext } from "./scenario.js";

const HEARTBEAT_MS = 10_000;
const VMS_PER_NODE = 20;
/**
 * cluster.reportRefreshMs of the daemon: a repeated report is rewritten every
 * 60 s instead of every heartbeat (10,000 nodes at 10 s are 1,000 store writes
 * per second, several times what etcd takes on a 2-core VM).
 */
const REPORT_REFRESH_MS = 60_000;
const OPERATIONS = 1000;
/** Submits in flight at once during the burst. */
const SUBMIT_CONCURRENCY = 100;
/** Heartbeat intervals measured in steady state. */
const WINDOW_INTERVALS = 2;
/** The ceilings measured beside the daemon at each count (agent-ceiling-server.ts). */
const CEILINGS = ["grpc-js", "http2"] as const;

/** etcd's own counters: calls received by method (a keepalive message counts one) and raft proposals committed. */
async function etcdCounters(endpoint: string): Promise<Map<string, number>> {
  const res = await fetch(`${endpoint}/metrics`, { signal: AbortSignal.timeout(10_000) });
  const out = new Map<string, number>();
  for (const line of (await res.text()).split("\n")) {
    const call =
      /^grpc_server_msg_received_total\{grpc_method="(\w+)",grpc_service="etcdserverpb\.\w+".*\} (\S+)$/.exec(
        line,
      );
    if (call !== null && Number(call[2]) > 0) out.set(call[1] as string, Number(call[2]));
    const committed = /^etcd_server_proposals_committed_total (\S+)$/.exec(line);
    if (committed !== null) out.set("proposals", Number(committed[1]));
  }
  return out;
}

/** What etcd counted between two {@link etcdCounters}, per unit (e.g. per stream), as "Txn 3.0, Range 1.0". */
function perUnit(before: Map<string, number>, after: Map<string, number>, units: number): string {
  return [...after]
    .map(([k, v]) => [k, (v - (before.get(k) ?? 0)) / Math.max(1, units)] as const)
    .filter(([, v]) => v >= 0.005)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${v.toFixed(2)}`)
    .join(", ");
}

/**
 * The daemon's event-loop delay (p99 and max, ms) since the previous scrape of
 * its /metrics: prom-client resets its histogram at each scrape.
 */
async function loopLagMs(httpAddress: string): Promise<{ p99: number; max: number }> {
  const res = await fetch(`http://${httpAddress}/metrics`, { signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  const of = (name: string) =>
    Number(
      new RegExp(`^debvisor_rpcd_nodejs_eventloop_lag_${name}_seconds (\\S+)`, "m").exec(text)?.[1],
    ) * 1000;
  return { p99: of("p99"), max: of("max") };
}

/** The daemon's heartbeats by outcome over its whole run (debvisor_agent_heartbeats_total). */
async function heartbeatOutcomes(httpAddress: string): Promise<string> {
  const res = await fetch(`http://${httpAddress}/metrics`, { signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  return [...text.matchAll(/^debvisor_agent_heartbeats_total\{outcome="(\w+)"\} (\S+)$/gm)]
    .map((m) => `${m[1]} ${m[2]}`)
    .join(", ");
}

/** One measurement at `agents` streams. */
interface AgentsRun extends Sample {
  readonly agents: number;
  readonly rssPerStreamKib: number;
  /** Of which the V8 heap in use (the rest: native TLS and HTTP/2 state, heap slack, allocator). */
  readonly heapPerStreamKib: number;
  readonly cpuMsPerHeartbeat: number;
  readonly connectSeconds: number;
  readonly received: number;
  readonly afterCommitP50Ms: number;
  readonly afterCommitP99Ms: number;
}

async function measureAgents(
  ctx: ScenarioContext,
  agents: number,
  run: number,
): Promise<AgentsRun> {
  const etcd = await startEtcd();
  if (etcd === undefined) throw new Error("etcd is not installed: apt-get install etcd-server");
  const dir = join(ctx.scratch, `agents-${agents}-${run}`);
  mkdirSync(dir, { recursive: true });
  const prefix = "/bench-agents/";
  const nodePrefix = "bn";
  // Every stream is its own TLS connection from 127.0.0.1: the connection
  // guard's defaults (4096 in all, 256 per address) are raised to fit N.
  const configFile = join(dir, "rpcd.yaml");
  writeFileSync(
    configFile,
    JSON.stringify({
      store: { backend: "etcd", endpoints: [etcd.endpoint], prefix },
      simulation: { enabled: false },
      panel: { enabled: false },
      cluster: { heartbeatIntervalMs: HEARTBEAT_MS, reportRefreshMs: REPORT_REFRESH_MS },
      limits: { maxConnections: agents + 256, maxConnectionsPerAddress: agents + 256 },
      rbac: {
        bindings: Array.from({ length: agents }, (_, i) => ({
          principal: nodeName(nodePrefix, i),
          roles: ["node"],
        })),
      },
    }),
  );
  const store = createEtcdStore({ endpoints: [etcd.endpoint], prefix });
  let load: AgentLoad | undefined;
  const profileName = `rpcd-agents-${agents}-${run}`;
  if (ctx.profileDir !== undefined) mkdirSync(ctx.profileDir, { recursive: true });
  /**
   * Profiled: a CPU profile at exit, and a heap snapshot after the burst up to
   * 2,000 streams (at 10,000 the snapshot of a 3 GiB heap outlasted the
   * daemon's time to exit, and the CPU profile was lost with it).
   */
  const snapshot = ctx.profileDir !== undefined && agents <= 2000;
  // Node's own flags for the daemon alone (V8's heap sizing, say), to compare with none.
  const extra = (process.env.BENCH_DAEMON_NODE_ARGS ?? "").split(/\s+/).filter((a) => a !== "");
  if (extra.length > 0) ctx.log(`  daemon node flags: ${extra.join(" ")}`);
  const daemon = await startDaemonProcess([...devDaemonArgs(dir), "--config", configFile], {
    timeoutMs: 60_000,
    nodeArgs: [
      ...extra,
      ...profileArgs(profileName, ctx.profileDir),
      ...(snapshot ? ["--heapsnapshot-signal=SIGUSR2", `--diagnostic-dir=${ctx.profileDir}`] : []),
    ],
  });
  const pid = daemon.proc.pid as number;
  try {
    await new Promise((r) => setTimeout(r, 2000));
    const rss0 = rssKib(pid);
    const heap0 = await heapKib(daemon.httpAddress);
    const etcd0 = await etcdCounters(etcd.endpoint);
    load = await startAgentLoad({
      address: daemon.grpcAddress,
      caCertFile: join(dir, "pki", "ca.crt"),
      caKeyFile: join(dir, "pki", "ca.key"),
      agents,
      nodePrefix,
      heartbeatIntervalMs: HEARTBEAT_MS,
      vmsPerNode: VMS_PER_NODE,
      fullReports: ctx.fullReports,
      serverPid: pid,
      log: ctx.log,
    });
    const connected = await load.connected;
    const receipts = load.receipts;
    const etcd1 = await etcdCounters(etcd.endpoint);
    ctx.log(`  etcd calls per stream welcomed: ${perUnit(etcd0, etcd1, connected.streams)}`);
    const problems: string[] = [];
    if (connected.streams !== agents)
      problems.push(
        `${connected.streams} of ${agents} streams welcomed (first error: ${connected.firstError})`,
      );
    // Steady state: every agent has sent its first heartbeat, then a measured window.
    await new Promise((r) => setTimeout(r, HEARTBEAT_MS + 2000));
    const cpu0 = cpuSeconds(pid);
    const beats0 = load.heartbeats();
    const etcd2 = await etcdCounters(etcd.endpoint);
    await new Promise((r) => setTimeout(r, WINDOW_INTERVALS * HEARTBEAT_MS));
    const cpu1 = cpuSeconds(pid);
    const beats = load.heartbeats() - beats0;
    const etcd3 = await etcdCounters(etcd.endpoint);
    ctx.log(`  etcd calls per heartbeat in the window: ${perUnit(etcd2, etcd3, beats)}`);
    const rss1 = rssKib(pid);
    const heap1 = await heapKib(daemon.httpAddress);
    const ended = load.ended();
    if (ended.count > 0) problems.push(`${ended.count} streams ended (${ended.firstError})`);

    // The burst: operations written to the store as any replica would. The scrape before it
    // resets the event-loop histogram; its time is what a Prometheus scrape costs at this scale.
    const scrape0 = preciseNow();
    await loopLagMs(daemon.httpAddress);
    ctx.log(`  a /metrics scrape took ${(preciseNow() - scrape0).toFixed(0)} ms`);
    const ops = createAgentOperations(store, systemClock);
    const submittedAt = new Map<string, number>();
    const committedAt = new Map<string, number>();
    let next = 0;
    const b0 = preciseNow();
    const burstCpu0 = cpuSeconds(pid);
    const submitter = async () => {
      while (next < OPERATIONS) {
        const i = next++;
        const node = nodeName(nodePrefix, i % agents);
        const id = `burst-${run}-${i}`;
        submittedAt.set(id, preciseNow());
        await ops.submit(
          node,
          {
            operationId: id,
            kind: OperationKind.START_VM,
            vmId: `${node}-vm-01`,
            params: {},
            generation: 0n,
          },
          "bench",
        );
        committedAt.set(id, preciseNow());
      }
    };
    await Promise.all(Array.from({ length: SUBMIT_CONCURRENCY }, submitter));
    const deadline = Date.now() + 60_000;
    while (receipts.size < OPERATIONS && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    const burstSeconds = (Math.max(...receipts.values(), b0) - b0) / 1000;
    const lag = await loopLagMs(daemon.httpAddress);
    ctx.log(
      `  daemon event-loop delay during the burst: p99 ${lag.p99.toFixed(0)} ms, max ${lag.max.toFixed(0)} ms`,
    );
    // The submits' own calls included (2 reads and a txn each); results still arriving are not.
    ctx.log(
      `  etcd calls per operation in the burst: ${perUnit(etcd3, await etcdCounters(etcd.endpoint), OPERATIONS)}`,
    );
    const burstCpu = cpuSeconds(pid) - burstCpu0;
    const latencies = [...submittedAt]
      .flatMap(([id, at]) => {
        const got = receipts.get(id);
        return got === undefined ? [] : [got - at];
      })
      .sort((a, b) => a - b);
    // From the store's commit of the operation to its receipt: the daemon's share.
    const afterCommit = [...committedAt]
      .flatMap(([id, at]) => {
        const got = receipts.get(id);
        return got === undefined ? [] : [got - at];
      })
      .sort((a, b) => a - b);
    if (latencies.length !== OPERATIONS)
      problems.push(`${latencies.length} of ${OPERATIONS} operations reached their agent`);
    // Every answer is recorded: each operation ends DONE in the store.
    const doneBy = Date.now() + 30_000;
    let notDone = [...submittedAt.keys()];
    while (notDone.length > 0 && Date.now() < doneBy) {
      const still: string[] = [];
      for (const id of notDone) {
        const i = Number(id.slice(id.lastIndexOf("-") + 1));
        const r = await ops.get(nodeName(nodePrefix, i % agents), id);
        if (r?.phase !== OperationPhase.DONE) still.push(id);
      }
      notDone = still;
      if (notDone.length > 0) await new Promise((r) => setTimeout(r, 500));
    }
    if (notDone.length > 0) problems.push(`${notDone.length} operations not DONE in the store`);
    // After the burst, so that writing it (seconds of a busy daemon) falls in neither measurement.
    if (snapshot) {
      daemon.proc.kill("SIGUSR2");
      ctx.log(`  heap snapshot asked of the daemon (written to ${ctx.profileDir})`);
    }
    const result: AgentsRun = {
      agents,
      reqPerSec: burstSeconds > 0 ? latencies.length / burstSeconds : 0,
      p50Ms: percentile(latencies, 0.5),
      p99Ms: percentile(latencies, 0.99),
      cpuPer10k: beats > 0 ? ((cpu1 - cpu0) / beats) * 10_000 : 0,
      cpuMsPerHeartbeat: beats > 0 ? ((cpu1 - cpu0) / beats) * 1000 : 0,
      rssPerStreamKib: (rss1 - rss0) / agents,
      heapPerStreamKib: (heap1 - heap0) / agents,
      connectSeconds: connected.ms / 1000,
      received: latencies.length,
      afterCommitP50Ms: percentile(afterCommit, 0.5),
      afterCommitP99Ms: percentile(afterCommit, 0.99),
      calls: OPERATIONS,
      problems,
    };
    ctx.log(
      `  round ${run + 1} ${String(agents).padStart(6)} streams: RSS ${result.rssPerStreamKib.toFixed(1)} KiB/stream (${(rss0 / 1024).toFixed(0)} -> ${(rss1 / 1024).toFixed(0)} MiB; V8 heap in use ${result.heapPerStreamKib.toFixed(1)} KiB/stream), CPU ${result.cpuMsPerHeartbeat.toFixed(3)} ms/heartbeat (${beats} heartbeats), dispatch p50 ${result.p50Ms.toFixed(1)} ms p99 ${result.p99Ms.toFixed(1)} ms (after the store's commit: p50 ${result.afterCommitP50Ms.toFixed(1)} ms p99 ${result.afterCommitP99Ms.toFixed(1)} ms), burst ${burstSeconds.toFixed(1)} s with ${burstCpu.toFixed(1)} daemon CPU s${problems.length > 0 ? `  REJECTED: ${problems.join("; ")}` : ""}`,
    );
    ctx.log(
      `  heartbeats the daemon took (whole run, by outcome): ${await heartbeatOutcomes(daemon.httpAddress).catch((err: unknown) => String(err))}`,
    );
    return result;
  } finally {
    await load?.stop();
    // The daemon's warnings and errors of the run, counted by message, for a run that went wrong.
    const troubles = new Map<string, number>();
    for (const l of daemon.logs)
      if (l.level === "warn" || l.level === "error" || l.level === "fatal") {
        const key = `${String(l.msg)}${l.err === undefined ? "" : `: ${String((l.err as { message?: string }).message ?? "").slice(0, 160)}`}`;
        troubles.set(key, (troubles.get(key) ?? 0) + 1);
      }
    for (const [msg, n] of [...troubles].sort((a, b) => b[1] - a[1]).slice(0, 8))
      ctx.log(`  daemon warned ${n} times: ${msg}`);
    if (daemon.proc.exitCode !== null || daemon.proc.signalCode !== null)
      ctx.log(
        `  the daemon exited early (${daemon.proc.exitCode ?? daemon.proc.signalCode}); its stderr ends: ${daemon.stderr().slice(-2000)}; its last log line: ${JSON.stringify(daemon.logs.at(-1))}`,
      );
    // SIGTERM, so that a profiled daemon writes its profile; SIGKILL if it lingers (a
    // profiled daemon at 10,000 streams took longer than 30 s, and its profile was lost).
    const stopping = Date.now();
    daemon.proc.kill("SIGTERM");
    const lingering = setTimeout(
      () => {
        ctx.log(`  the daemon did not exit in time after SIGTERM: killed`);
        daemon.kill();
      },
      ctx.profileDir === undefined ? 30_000 : 180_000,
    );
    await daemon.exited;
    clearTimeout(lingering);
    if (ctx.profileDir !== undefined)
      ctx.log(`  the daemon exited ${((Date.now() - stopping) / 1000).toFixed(1)} s after SIGTERM`);
    const profile =
      ctx.profileDir === undefined ? undefined : join(ctx.profileDir, `${profileName}.cpuprofile`);
    if (profile !== undefined && existsSync(profile)) ctx.profileWritten(profile);
    await store.close();
    await etcd.stop();
  }
}

/** A run that ended before it measured anything. */
function failedRun(agents: number, why: string): AgentsRun {
  const none = Number.NaN;
  return {
    agents,
    reqPerSec: 0,
    p50Ms: none,
    p99Ms: none,
    cpuPer10k: none,
    cpuMsPerHeartbeat: none,
    rssPerStreamKib: none,
    heapPerStreamKib: none,
    connectSeconds: none,
    received: 0,
    afterCommitP50Ms: none,
    afterCommitP99Ms: none,
    calls: OPERATIONS,
    problems: [why],
  };
}

/** The stream counts `--agents` asked for (default 100). */
export function agentCounts(ctx: ScenarioContext): number[] {
  return ctx.agents.length > 0 ? [...ctx.agents] : [100];
}

export const agentsScenario: Scenario = {
  id: "agents",
  about: `N agent streams (mTLS, own certificate each) heartbeating every ${HEARTBEAT_MS / 1000} s with ${VMS_PER_NODE} VMs, a burst of ${OPERATIONS} operations dispatched through the store`,
  async run(ctx) {
    const counts = agentCounts(ctx);
    const all: Record<string, AgentsRun[]> = Object.fromEntries(
      counts.map((n) => [`${n} streams`, []]),
    );
    const ceilings: Record<string, CeilingRun[]> = Object.fromEntries(
      counts.flatMap((n) => CEILINGS.map((k) => [`${n} ${k}`, []])),
    );
    // Each round measures the daemon and its ceilings at each count, in rotated order.
    for (let round = 0; round < ctx.rounds; round++)
      for (const n of roundOrder(counts, round))
        for (const v of roundOrder(
          ctx.skipCeilings ? (["daemon"] as const) : (["daemon", ...CEILINGS] as const),
          round,
        )) {
          if (v === "daemon") {
            all[`${n} streams`]?.push(
              // A run that could not finish (e.g. streams never all connected) is
              // rejected with why; the other counts' runs still count.
              await measureAgents(ctx, n, round).catch((err: unknown) => {
                ctx.log(`  round ${round + 1} ${n} streams REJECTED: ${String(err)}`);
                return failedRun(n, String(err));
              }),
            );
            continue;
          }
          const load = {
            agents: n,
            heartbeatIntervalMs: HEARTBEAT_MS,
            vmsPerNode: VMS_PER_NODE,
            fullReports: ctx.fullReports,
            windowIntervals: WINDOW_INTERVALS,
          };
          const dir = join(ctx.scratch, `agents-ceiling-${v}-${n}-${round}`);
          ceilings[`${n} ${v}`]?.push(
            await measureAgentCeiling(v, load, dir, ctx.profileDir, ctx.log).catch(
              (err: unknown) => {
                ctx.log(`  round ${round + 1} ceiling ${v} ${n} streams REJECTED: ${String(err)}`);
                return failedCeilingRun(String(err));
              },
            ),
          );
        }
    const medianOf = <R extends Sample>(runs: readonly R[], f: (r: R) => number) => {
      const ok = runs.filter((r) => r.problems.length === 0);
      return ok.length === 0 ? Number.NaN : median(ok.map(f));
    };
    const rows = counts.flatMap((n) => {
      const runs = all[`${n} streams`] ?? [];
      return [
        row(
          "Agents",
          `${n} streams, burst of ${OPERATIONS} operations`,
          summarize(runs),
          `dispatch/s is the burst's delivery rate; CPU column: daemon CPU s per 10k heartbeats (${medianOf(runs, (r) => r.cpuMsPerHeartbeat).toFixed(3)} ms per heartbeat); RSS ${medianOf(runs, (r) => r.rssPerStreamKib).toFixed(1)} KiB per stream (V8 heap in use ${medianOf(runs, (r) => r.heapPerStreamKib).toFixed(1)} KiB); from the store's commit to receipt p50 ${medianOf(runs, (r) => r.afterCommitP50Ms).toFixed(1)} ms, p99 ${medianOf(runs, (r) => r.afterCommitP99Ms).toFixed(1)} ms; streams connected in ${medianOf(runs, (r) => r.connectSeconds).toFixed(0)} s`,
        ),
        ...(ctx.skipCeilings ? ([] as const) : CEILINGS).map((k) => {
          const c = ceilings[`${n} ${k}`] ?? [];
          return row(
            "Agents",
            `${n} streams, ceiling: bare ${k}`,
            summarize(c),
            `the same load on a bare ${k} server that decodes every message and keeps nothing (agent-ceiling-server.ts); throughput: heartbeats received per second; CPU column: server CPU s per 10k heartbeats (${medianOf(c, (r) => r.cpuMsPerHeartbeat).toFixed(3)} ms per heartbeat); RSS ${medianOf(c, (r) => r.rssPerStreamKib).toFixed(1)} KiB per stream (V8 heap in use ${medianOf(c, (r) => r.heapPerStreamKib).toFixed(1)} KiB)`,
          );
        }),
      ];
    });
    const largest = Math.max(...counts);
    const big = all[`${largest} streams`] ?? [];
    const rss = medianOf(big, (r) => r.rssPerStreamKib);
    const p99 = medianOf(big, (r) => r.p99Ms);
    return {
      id: this.id,
      rows,
      targets: [
        target(
          `RSS per stream at ${largest} streams`,
          "under 100 KiB (goal at 10,000 streams)",
          `${rss.toFixed(1)} KiB`,
          rss,
          (v) => v < 100,
        ),
        target(
          `Dispatch p99 at ${largest} streams`,
          "under 100 ms (goal at 10,000 streams)",
          `${p99.toFixed(1)} ms`,
          p99,
          (v) => v < 100,
        ),
      ],
      commands: [
        `node bench/agent-load-client.ts (forked): N streams POST /debvisor.v1.AgentService/Connect over TLS 1.3, each with its own client certificate (CN = its node, issued from the daemon's dev CA), Hello then a Health with ${VMS_PER_NODE} VMs every ${HEARTBEAT_MS} ms; ${OPERATIONS} operations submitted with createAgentOperations on the daemon's etcd (${SUBMIT_CONCURRENCY} in flight); daemon limits.maxConnections and limits.maxConnectionsPerAddress = N + 256`,
      ],
      runs: {
        ...all,
        ...Object.fromEntries(Object.entries(ceilings).map(([k, v]) => [`${k} ceiling`, v])),
      },
      details: {
        heartbeatMs: HEARTBEAT_MS,
        vmsPerNode: VMS_PER_NODE,
        operations: OPERATIONS,
        fullReports: ctx.fullReports === true,
      },
    } satisfies ScenarioResult;
  },
};
