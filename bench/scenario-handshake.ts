// Handshakes: new TLS connections per second, one ListNodes call on each,
// against the full daemon with an ECDSA P-256 or an RSA-4096 server
// certificate. h2load with as many clients as calls makes each client one
// connection with one call.
import { FULL } from "./bench-fixture.js";
import { row, type ScenarioResult, summarize, target } from "./bench-report.js";
import { median } from "./bench-support.js";
import { alternateRounds, listNodesLoad, type Scenario, scaled, withServers } from "./scenario.js";

const CONNECTIONS = 400;

export const handshakeScenario: Scenario = {
  id: "handshake",
  about: "new TLS connections per second, ECDSA P-256 vs RSA-4096 server certificate",
  async run(ctx) {
    const n = scaled(ctx, CONNECTIONS, 20);
    const { runs, command } = await withServers(ctx, async (start) => {
      const shape = { clients: "per-call", streams: 1 } as const;
      const variants = [
        { name: "ecdsa-p256", load: listNodesLoad(ctx, await start.daemon("ecdsa", FULL), shape) },
        {
          name: "rsa-4096",
          load: listNodesLoad(
            ctx,
            await start.daemon("rsa4096", { ...FULL, serverKey: "rsa" }),
            shape,
          ),
        },
      ];
      for (const v of variants)
        await v.load.measure(Math.ceil(n / 4), `handshake-warmup-${v.name}.log`);
      return {
        runs: await alternateRounds(ctx, variants, (v, round) =>
          v.load.measure(n, `handshake-${v.name}-${round}.log`),
        ),
        command: `${variants[0]?.load.command(n)}  (-c = -n: each client is one new TLS 1.3 connection with one call)`,
      };
    });
    const e = summarize(runs["ecdsa-p256"] ?? []);
    const r = summarize(runs["rsa-4096"] ?? []);
    const connectMs = (name: string) =>
      median(
        (runs[name] ?? []).filter((s) => s.problems.length === 0).map((s) => s.connectMeanMs ?? 0),
      );
    const ratio = e.runs > 0 && r.runs > 0 ? e.rate / r.rate : undefined;
    const note = (name: string) =>
      `one call per connection; mean connect ${connectMs(name).toFixed(1)} ms; CPU per 10k connections`;
    return {
      id: this.id,
      rows: [
        row(
          "Handshakes",
          "ECDSA P-256 server certificate, full daemon",
          e,
          note("ecdsa-p256"),
          "conn/s",
        ),
        row(
          "Handshakes",
          "RSA-4096 server certificate, full daemon",
          r,
          note("rsa-4096"),
          "conn/s",
        ),
      ],
      targets: [
        target(
          "ECDSA vs RSA-4096 handshakes",
          ">= 4x the connections per second",
          ratio === undefined
            ? "no verified run"
            : `${ratio.toFixed(2)}x (${Math.round(e.rate)} vs ${Math.round(r.rate)} conn/s)`,
          ratio,
          (x) => x >= 4,
        ),
      ],
      commands: [command],
      runs,
      details: { connectionsPerRun: n },
    } satisfies ScenarioResult;
  },
};
