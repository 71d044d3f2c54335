// What a scenario is given, how it alternates its variants over rounds
// (A B A B ..., the order rotated each round), and how it builds and states
// its h2load command.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fromBinary } from "@bufbuild/protobuf";
import { NodeListSchema } from "../src/gen/debvisor/v1/node_pb.js";
import type { BenchFixture, DaemonVariant } from "./bench-fixture.js";
import type { ScenarioResult } from "./bench-report.js";
import {
  type BenchServer,
  type ProfileDir,
  startCeilingServer,
  startDaemonServer,
} from "./bench-servers.js";
import { grpcFrame, roundOrder } from "./bench-support.js";
import type { LoadTarget } from "./grpc-load-client.js";
import { checkSample, LIST_NODES, measureH2load, type Sample } from "./measure.js";

/** What every scenario gets. */
export interface ScenarioContext {
  readonly fixture: BenchFixture;
  readonly rounds: number;
  /** Multiplies every call count (1 for the real run; less while developing). */
  readonly scale: number;
  readonly profileDir: ProfileDir;
  /** Scratch folder for h2load logs and request bodies. */
  readonly scratch: string;
  /** Results of the scenarios that ran before this one. */
  readonly earlier: ReadonlyMap<string, ScenarioResult>;
  /** Progress lines (stderr). */
  log(line: string): void;
  /** Records a CPU profile a stopped server wrote. */
  profileWritten(file: string): void;
  /** Stream counts for the agents scenario (`--agents 1000,10000`; empty: its default). */
  readonly agents: readonly number[];
  /** Agents scenario: every heartbeat lists the node's VMs (`--full-reports`), as older agents send them. */
  readonly fullReports?: boolean;
  /** Agents scenario: the daemon alone, without its two transport ceilings (`--skip-ceilings`). */
  readonly skipCeilings?: boolean;
}

/** A scenario of the suite. */
export interface Scenario {
  readonly id: string;
  readonly about: string;
  run(ctx: ScenarioContext): Promise<ScenarioResult>;
}

/** `n` scaled, at least `min`. */
export function scaled(ctx: ScenarioContext, n: number, min = 100): number {
  return Math.max(min, Math.round(n * ctx.scale));
}

/** Measures every variant once per round in rotated order; returns the samples by variant. */
export async function alternateRounds<V extends { readonly name: string }>(
  ctx: ScenarioContext,
  variants: readonly V[],
  measure: (v: V, round: number) => Promise<Sample>,
): Promise<Record<string, Sample[]>> {
  const samples: Record<string, Sample[]> = Object.fromEntries(variants.map((v) => [v.name, []]));
  for (let round = 0; round < ctx.rounds; round++) {
    for (const v of roundOrder(variants, round)) {
      const s = await measure(v, round);
      samples[v.name]?.push(s);
      ctx.log(
        `  round ${round + 1} ${v.name.padEnd(14)} ${s.reqPerSec.toFixed(0).padStart(6)}/s  p50 ${s.p50Ms.toFixed(2)} ms  p99 ${s.p99Ms.toFixed(2)} ms  cpu ${s.cpuPer10k.toFixed(2)} s/10k${s.problems.length > 0 ? `  REJECTED: ${s.problems.join("; ")}` : ""}`,
      );
    }
  }
  return samples;
}

/** Starts servers for a scenario; {@link withServers} stops them. */
export interface ServerStarter {
  /** The built daemon with a configuration named `name` (store: a copy of the read store, or `store`). */
  daemon(name: string, variant: DaemonVariant, store?: string): Promise<BenchServer>;
  /** A ceiling server answering ListNodes with the response in `responseFile`. */
  ceiling(kind: "http2" | "grpc-js", responseFile: string): Promise<BenchServer>;
}

/**
 * Runs `body` with a way to start servers, and stops every server it started
 * when it ends, however it ends; CPU profiles they wrote are noted.
 */
export async function withServers<T>(
  ctx: ScenarioContext,
  body: (start: ServerStarter) => Promise<T>,
): Promise<T> {
  const started: BenchServer[] = [];
  const f = ctx.fixture;
  const track = (s: BenchServer) => {
    started.push(s);
    return s;
  };
  try {
    return await body({
      daemon: async (name, variant, store) =>
        track(
          await startDaemonServer(
            `daemon-${name}`,
            f.daemonConfig(name, variant, store),
            ctx.profileDir,
          ),
        ),
      ceiling: async (kind, response) =>
        track(
          await startCeilingServer(
            `ceiling-${kind}`,
            kind,
            { cert: f.ecdsa.cert, key: f.ecdsa.key, ca: f.caFile, response },
            ctx.profileDir,
          ),
        ),
    });
  } finally {
    for (const s of started) {
      const profile = await s.stop();
      if (profile !== undefined) ctx.profileWritten(profile);
    }
  }
}

/** ListNodes load from h2load with the viewer API key against one server. */
export interface ListNodesLoad {
  /** h2load's arguments for `calls` calls. */
  args(calls: number): string[];
  /** The command as the report states it. */
  command(calls: number): string;
  /** A verified run of `calls` calls, its per-call log in the scratch folder as `log`. */
  measure(calls: number, log: string): Promise<Sample>;
}

/**
 * ListNodes (empty request) with the viewer API key against `server`:
 * `clients` h2load clients ("per-call": one new connection for every call),
 * `streams` calls in flight on each, `extra` h2load options.
 */
export function listNodesLoad(
  ctx: ScenarioContext,
  server: BenchServer,
  shape: {
    readonly clients: number | "per-call";
    readonly streams: number;
    readonly extra?: readonly string[];
  },
): ListNodesLoad {
  const { apiKey, caPem } = ctx.fixture;
  const bodyFile = join(ctx.scratch, "listnodes-request.bin");
  writeFileSync(bodyFile, grpcFrame(new Uint8Array(0)));
  const args = (calls: number) =>
    h2loadArgs({
      address: server.address,
      path: LIST_NODES.path,
      bearer: apiKey,
      bodyFile,
      calls,
      clients: shape.clients === "per-call" ? calls : shape.clients,
      streams: shape.streams,
      extra: shape.extra,
    });
  const sample = listNodesSample({ address: server.address, caPem }, apiKey);
  return {
    args,
    command: (calls) =>
      describeCommand("h2load", [...args(calls), "--log-file=<per-call log>"], {
        [apiKey]: "<viewer API key>",
        [bodyFile]: "<frame of an empty ListNodesRequest>",
      }),
    measure: (calls, log) =>
      measureH2load(server, LIST_NODES, {
        args: args(calls),
        calls,
        logFile: join(ctx.scratch, log),
        sample,
      }),
  };
}

/** h2load arguments for unary gRPC calls of `path` with a bearer token. */
export function h2loadArgs(o: {
  readonly address: string;
  readonly path: string;
  readonly bearer: string;
  readonly bodyFile: string;
  readonly calls: number;
  readonly clients: number;
  readonly streams: number;
  readonly extra?: readonly string[];
}): string[] {
  return [
    "-n",
    String(o.calls),
    "-c",
    String(o.clients),
    "-m",
    String(o.streams),
    ...(o.extra ?? []),
    "-H",
    "content-type: application/grpc",
    "-H",
    "te: trailers",
    "-H",
    `authorization: Bearer ${o.bearer}`,
    "-d",
    o.bodyFile,
    `https://${o.address}${o.path}`,
  ];
}

/** The command as a shell line, with secrets, files and ports replaced by what they are. */
export function describeCommand(
  program: string,
  args: readonly string[],
  replace: Readonly<Record<string, string>>,
): string {
  const shown = args.map((a) => {
    let s = a;
    for (const [from, to] of Object.entries(replace)) s = s.split(from).join(to);
    s = s.replace(/127\.0\.0\.1:\d+/g, "127.0.0.1:PORT");
    return /[\s']/.test(s) ? `'${s}'` : s;
  });
  return [program, ...shown].join(" ");
}

/** Checks a ListNodes response: exactly `count` nodes. */
export function expectNodes(count: number) {
  return (message: Buffer): string | undefined => {
    const n = fromBinary(NodeListSchema, message).nodes.length;
    return n === count ? undefined : `expected ${count} nodes, got ${n}`;
  };
}

/** A sample check of ListNodes as h2load sends it (the bearer token, an empty request). */
export function listNodesSample(target: LoadTarget, bearer: string, nodes = 10) {
  return () =>
    checkSample(target, {
      path: LIST_NODES.path,
      request: () => ({ message: new Uint8Array(0), bearer }),
      check: expectNodes(nodes),
    });
}
