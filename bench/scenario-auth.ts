// Authentication methods: the same ListNodes load from the same Node client
// (h2load cannot present a client certificate) against the full daemon,
// authenticated by API key, by ES256 JWT, or by client certificate (mTLS).
import { FULL, MTLS_PRINCIPAL } from "./bench-fixture.js";
import { percent, row, type ScenarioResult, summarize } from "./bench-report.js";
import type { LoadPlan, LoadTarget } from "./grpc-load-client.js";
import { LIST_NODES, measureNodeClient } from "./measure.js";
import { alternateRounds, expectNodes, type Scenario, scaled, withServers } from "./scenario.js";

const CONNECTIONS = 2;
const STREAMS = 16;
const CALLS = 8000;

export const authScenario: Scenario = {
  id: "auth",
  about: "API key vs JWT (ES256) vs mTLS, one Node client for all three",
  async run(ctx) {
    const f = ctx.fixture;
    const calls = scaled(ctx, CALLS);
    const plan = (bearer: string | undefined, n: number): LoadPlan => ({
      path: LIST_NODES.path,
      calls: n,
      connections: CONNECTIONS,
      streams: STREAMS,
      timeoutMs: 180_000,
      request: () => ({ message: new Uint8Array(0), bearer }),
      check: expectNodes(10),
      checkEvery: 100,
    });
    const runs = await withServers(ctx, async (start) => {
      const server = await start.daemon("auth", FULL);
      const base: LoadTarget = { address: server.address, caPem: f.caPem };
      const variants = [
        { name: "apikey", target: base, bearer: f.apiKey as string | undefined },
        { name: "jwt", target: base, bearer: f.jwt as string | undefined },
        { name: "mtls", target: { ...base, client: f.mtlsClient }, bearer: undefined },
      ];
      ctx.log("  warm-up: one short run per method");
      for (const v of variants) {
        const s = await measureNodeClient(
          server,
          LIST_NODES,
          v.target,
          plan(v.bearer, Math.ceil(calls / 5)),
        );
        if (s.problems.length > 0) ctx.log(`  warm-up ${v.name}: ${s.problems.join("; ")}`);
      }
      return alternateRounds(ctx, variants, (v) =>
        measureNodeClient(server, LIST_NODES, v.target, plan(v.bearer, calls)),
      );
    });
    const apikey = summarize(runs.apikey ?? []);
    const jwt = summarize(runs.jwt ?? []);
    const mtls = summarize(runs.mtls ?? []);
    return {
      id: this.id,
      rows: [
        row("Auth method", "API key (bearer), full daemon", apikey, "Node client"),
        row(
          "Auth method",
          "JWT ES256 (bearer), full daemon",
          jwt,
          `${percent(jwt.rate, apikey.rate)} of API key`,
        ),
        row(
          "Auth method",
          "mTLS client certificate, full daemon",
          mtls,
          `${percent(mtls.rate, apikey.rate)} of API key`,
        ),
      ],
      targets: [],
      commands: [
        `node client (bench/grpc-load-client.ts): ${calls} unary ${LIST_NODES.path} calls, empty request, ${CONNECTIONS} TLS 1.3 connections x ${STREAMS} calls in flight; credential: 'authorization: Bearer <viewer API key>' | 'authorization: Bearer <ES256 JWT, roles [viewer]>' | client certificate CN=${MTLS_PRINCIPAL} (bound to viewer)`,
      ],
      runs,
      details: { calls, connections: CONNECTIONS, streams: STREAMS },
    } satisfies ScenarioResult;
  },
};
