// Ceilings, the secured read, and each stage's cost: ListNodes (10 nodes)
// with h2load over TLS against six servers, alternated every round:
//   - bare node:http2 answering a pre-encoded response (ceiling),
//   - bare grpc-js with the protobuf-es codec (ceiling),
//   - the daemon with the full pipeline (API key, RBAC, rate limits,
//     validation, durable audit),
//   - the daemon with audit off, then also rate limits off, then also RBAC off.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { FULL } from "./bench-fixture.js";
import {
  percent,
  row,
  type ScenarioResult,
  type Summary,
  summarize,
  target,
} from "./bench-report.js";
import type { BenchServer } from "./bench-servers.js";
import { openSession, unaryCall } from "./grpc-load-client.js";
import { LIST_NODES } from "./measure.js";
import {
  alternateRounds,
  listNodesLoad,
  type Scenario,
  type ScenarioContext,
  scaled,
  withServers,
} from "./scenario.js";

const CLIENTS = 8;
const STREAMS = 10;
const CALLS = 20_000;

/** The full daemon's ListNodes response, which the ceilings answer with. */
async function fetchResponse(ctx: ScenarioContext, server: BenchServer): Promise<string> {
  const session = await openSession({ address: server.address, caPem: ctx.fixture.caPem });
  try {
    const r = await unaryCall(
      session,
      LIST_NODES.path,
      new Uint8Array(0),
      ctx.fixture.apiKey,
      10_000,
    );
    if ("problem" in r) throw new Error(`ListNodes on the full daemon: ${r.problem}`);
    const file = join(ctx.scratch, "listnodes-response.bin");
    writeFileSync(file, r.message);
    return file;
  } finally {
    session.close();
  }
}

export const readsScenario: Scenario = {
  id: "reads",
  about: "ceilings, the secured read through the full daemon, and each stage's cost",
  async run(ctx) {
    const calls = scaled(ctx, CALLS);
    const { runs, command } = await withServers(ctx, async (start) => {
      const full = await start.daemon("full", FULL);
      const auditOff = await start.daemon("audit-off", { ...FULL, audit: false });
      const rateLimitOff = await start.daemon("ratelimit-off", {
        ...FULL,
        audit: false,
        rateLimit: false,
      });
      const rbacOff = await start.daemon("rbac-off", {
        audit: false,
        rateLimit: false,
        authorization: false,
      });
      const response = await fetchResponse(ctx, full);
      const http2 = await start.ceiling("http2", response);
      const grpcJs = await start.ceiling("grpc-js", response);
      const shape = { clients: CLIENTS, streams: STREAMS };
      const variants = Object.entries({
        http2,
        "grpc-js": grpcJs,
        full,
        "audit-off": auditOff,
        "ratelimit-off": rateLimitOff,
        "rbac-off": rbacOff,
      }).map(([name, server]) => ({ name, load: listNodesLoad(ctx, server, shape) }));
      ctx.log("  warm-up: one short run per server");
      for (const v of variants) {
        const s = await v.load.measure(Math.ceil(calls / 5), `reads-warmup-${v.name}.log`);
        if (s.problems.length > 0) ctx.log(`  warm-up ${v.name}: ${s.problems.join("; ")}`);
      }
      return {
        runs: await alternateRounds(ctx, variants, (v, round) =>
          v.load.measure(calls, `reads-${v.name}-${round}.log`),
        ),
        command: `${variants[0]?.load.command(calls)}  (the same against each of the six servers)`,
      };
    });

    const m = (name: string): Summary => summarize(runs[name] ?? []);
    const [http2, grpcJs, full, auditOff, rateLimitOff, rbacOff] = [
      m("http2"),
      m("grpc-js"),
      m("full"),
      m("audit-off"),
      m("ratelimit-off"),
      m("rbac-off"),
    ] as const;
    const ratio = (a: Summary, b: Summary) =>
      a.runs > 0 && b.runs > 0 ? a.rate / b.rate : undefined;
    const keeps = (a: Summary, b: Summary) =>
      `${percent(a.rate, b.rate)} (${Math.round(a.rate)} of ${Math.round(b.rate)} req/s)`;
    return {
      id: this.id,
      rows: [
        row("Ceiling", "bare node:http2, pre-encoded response", http2, "no gRPC library, no codec"),
        row("Ceiling", "bare grpc-js + protobuf-es codec", grpcJs, "no pipeline"),
        row(
          "Secured read",
          "full daemon: API key, RBAC, rate limit, durable audit",
          full,
          `${percent(full.rate, grpcJs.rate)} of bare grpc-js, ${percent(full.rate, http2.rate)} of bare http2`,
        ),
        row(
          "Stage cost",
          "audit off",
          auditOff,
          `with durable audit: ${percent(full.rate, auditOff.rate)} of this`,
        ),
        row(
          "Stage cost",
          "audit and rate limit off",
          rateLimitOff,
          `with rate limits: ${percent(auditOff.rate, rateLimitOff.rate)} of this`,
        ),
        row(
          "Stage cost",
          "audit, rate limit and RBAC off",
          rbacOff,
          `with RBAC: ${percent(rateLimitOff.rate, rbacOff.rate)} of this; API key check, validation and adapter remain: ${percent(rbacOff.rate, grpcJs.rate)} of bare grpc-js`,
        ),
      ],
      targets: [
        target(
          "Full pipeline vs bare grpc-js",
          ">= 80% of the throughput",
          keeps(full, grpcJs),
          ratio(full, grpcJs),
          (r) => r >= 0.8,
        ),
        target(
          "Durable audit vs audit off",
          ">= 85% of the throughput",
          keeps(full, auditOff),
          ratio(full, auditOff),
          (r) => r >= 0.85,
        ),
      ],
      commands: [command],
      runs,
      details: { calls, clients: CLIENTS, streams: STREAMS },
    } satisfies ScenarioResult;
  },
};
