// One measured run against one server, with h2load or the Node client, and
// the verification that decides whether it counts: a sample of real calls
// must end with gRPC status 0 and the expected content, and the server's own
// counters must show exactly the calls sent, all OK. Also the server's CPU
// seconds over the run.
import type { BenchServer } from "./bench-servers.js";
import { callCounts, runH2load, runProblems } from "./bench-support.js";
import { type LoadPlan, type LoadTarget, runGrpcLoad } from "./grpc-load-client.js";

/** A method the servers count calls of. */
export interface MethodRef {
  readonly service: string;
  readonly method: string;
  readonly path: string;
}

export const LIST_NODES: MethodRef = {
  service: "debvisor.v1.NodeService",
  method: "ListNodes",
  path: "/debvisor.v1.NodeService/ListNodes",
};
export const HEARTBEAT: MethodRef = {
  service: "debvisor.v1.NodeService",
  method: "Heartbeat",
  path: "/debvisor.v1.NodeService/Heartbeat",
};

/** What one run measured, and whether it counts. */
export interface Sample {
  readonly reqPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** Server CPU seconds (user + system) per 10,000 calls. */
  readonly cpuPer10k: number;
  readonly calls: number;
  /** Mean TCP + TLS connect time (h2load runs only). */
  readonly connectMeanMs?: number;
  /** Empty when the run counts. */
  readonly problems: readonly string[];
}

/** The calls `sample` sends before an h2load run, each checked for status 0 and content. */
const SAMPLE_CALLS = 10;

/** Sends a few calls like the load's and returns what was wrong with them. */
export async function checkSample(
  target: LoadTarget,
  plan: Pick<LoadPlan, "path" | "request" | "check">,
): Promise<string[]> {
  try {
    const r = await runGrpcLoad(target, {
      ...plan,
      calls: SAMPLE_CALLS,
      connections: 1,
      streams: 2,
      timeoutMs: 20_000,
      checkEvery: 1,
    });
    return r.firstProblem === undefined ? [] : [`sample: ${r.firstProblem}`];
  } catch (err) {
    return [`sample: ${(err as Error).message}`];
  }
}

/** Counters and CPU around `run`; the run's own result supplies the rest. */
async function around<T extends { ok: number }>(
  server: BenchServer,
  method: MethodRef,
  calls: number,
  sampleProblems: readonly string[],
  run: () => Promise<T>,
): Promise<{ result: T; cpuPer10k: number; problems: string[] }> {
  const before = callCounts(await server.metrics(), method.service, method.method);
  const cpu0 = server.cpuSeconds();
  const result = await run();
  const cpu = server.cpuSeconds() - cpu0;
  const after = callCounts(await server.metrics(), method.service, method.method);
  const problems = runProblems({ sent: calls, clientOk: result.ok, before, after, sampleProblems });
  return { result, cpuPer10k: (cpu / calls) * 10_000, problems };
}

/** An h2load run of `calls` calls (its -n), preceded by a sample check. */
export async function measureH2load(
  server: BenchServer,
  method: MethodRef,
  run: {
    readonly args: readonly string[];
    readonly calls: number;
    readonly logFile: string;
    readonly sample: () => Promise<string[]>;
    readonly timeoutMs?: number;
  },
): Promise<Sample> {
  const sampleProblems = await run.sample();
  const { result, cpuPer10k, problems } = await around(
    server,
    method,
    run.calls,
    sampleProblems,
    async () => {
      const r = await runH2load(run.args, run.logFile, run.timeoutMs);
      return { ...r, ok: r.succeeded };
    },
  );
  return {
    reqPerSec: result.reqPerSec,
    p50Ms: result.p50Ms,
    p99Ms: result.p99Ms,
    cpuPer10k,
    calls: run.calls,
    connectMeanMs: result.connectMeanMs,
    problems,
  };
}

/** A Node client run (every response's gRPC status checked, content every checkEvery-th). */
export async function measureNodeClient(
  server: BenchServer,
  method: MethodRef,
  target: LoadTarget,
  plan: LoadPlan,
): Promise<Sample> {
  const { result, cpuPer10k, problems } = await around(server, method, plan.calls, [], () =>
    runGrpcLoad(target, plan),
  );
  if (result.firstProblem !== undefined) problems.unshift(result.firstProblem);
  return {
    reqPerSec: result.reqPerSec,
    p50Ms: result.p50Ms,
    p99Ms: result.p99Ms,
    cpuPer10k,
    calls: plan.calls,
    problems,
  };
}
