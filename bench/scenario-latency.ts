// Latency under moderate load: the full daemon's ListNodes at half of the
// maximum throughput the reads scenario measured (or, when it did not run,
// measured here first), paced by h2load --rps; p50 and p99 over each run.
import { FULL } from "./bench-fixture.js";
import { row, type ScenarioResult, summarize, target } from "./bench-report.js";
import { median } from "./bench-support.js";
import { alternateRounds, listNodesLoad, type Scenario, scaled, withServers } from "./scenario.js";

/** Paced clients; each sends at most --rps calls per second. */
const CLIENTS = 4;
const STREAMS = 10;
const SECONDS = 6;

export const latencyScenario: Scenario = {
  id: "latency",
  about: "p99 of the secured read at 50% of its measured maximum throughput",
  async run(ctx) {
    const secured = ctx.earlier.get("reads")?.rows.find((r) => r.scenario === "Secured read");
    const fromReads = secured !== undefined && secured.runs > 0 ? secured.rate : undefined;
    const maxFrom = fromReads === undefined ? "measured here, unpaced" : "reads scenario";
    const { runs, max, offered, calls, command } = await withServers(ctx, async (start) => {
      const server = await start.daemon("latency", FULL);
      let max = fromReads;
      if (max === undefined) {
        const unpaced = listNodesLoad(ctx, server, { clients: 8, streams: STREAMS });
        const rates: number[] = [];
        for (let i = 0; i < 3; i++) {
          const s = await unpaced.measure(scaled(ctx, 10_000), `latency-max-${i}.log`);
          if (s.problems.length === 0) rates.push(s.reqPerSec);
        }
        if (rates.length === 0) throw new Error("no verified run to find the maximum throughput");
        max = median(rates);
      }
      const perClient = Math.max(1, Math.round(max / 2 / CLIENTS));
      const offered = perClient * CLIENTS;
      const calls = scaled(ctx, offered * SECONDS);
      const paced = listNodesLoad(ctx, server, {
        clients: CLIENTS,
        streams: STREAMS,
        extra: ["--rps", String(perClient)],
      });
      ctx.log(`  maximum ${Math.round(max)} req/s (${maxFrom}); offering ${offered} req/s`);
      await paced.measure(Math.max(100, offered), "latency-warmup.log");
      const runs = await alternateRounds(ctx, [{ name: "half-load" }], (_v, round) =>
        paced.measure(calls, `latency-${round}.log`),
      );
      return { runs, max, offered, calls, command: paced.command(calls) };
    });
    const m = summarize(runs["half-load"] ?? []);
    return {
      id: this.id,
      rows: [
        row(
          "Latency at 50% load",
          `full daemon, ${offered} req/s offered`,
          m,
          `50% of ${Math.round(max)} req/s (${maxFrom})`,
        ),
      ],
      targets: [
        target(
          "p99 at half of maximum load",
          "< 10 ms",
          m.runs > 0 ? `${m.p99Ms.toFixed(2)} ms at ${offered} req/s` : "no verified run",
          m.runs > 0 ? m.p99Ms : undefined,
          (p99) => p99 < 10,
        ),
      ],
      commands: [command],
      runs,
      details: { maxReqPerSec: max, maxFrom, offeredReqPerSec: offered, calls },
    } satisfies ScenarioResult;
  },
};
