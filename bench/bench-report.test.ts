import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  percent,
  renderReport,
  row,
  type ScenarioResult,
  summarize,
  target,
} from "./bench-report.js";
import type { Sample } from "./measure.js";

const sample = (reqPerSec: number, problems: string[] = []): Sample => ({
  reqPerSec,
  p50Ms: reqPerSec / 1000,
  p99Ms: reqPerSec / 100,
  cpuPer10k: 1,
  calls: 1000,
  problems,
});

describe("summaries", () => {
  it("takes medians over the runs that passed verification only", () => {
    const s = summarize([
      sample(1000),
      sample(9000, ["server counted 0 OK calls"]),
      sample(3000),
      sample(2000),
    ]);
    assert.deepEqual(s, { rate: 2000, p50Ms: 2, p99Ms: 20, cpuPer10k: 1, runs: 3, rejected: 1 });
  });

  it("reports no numbers when no run counted", () => {
    assert.deepEqual(summarize([sample(5000, ["x"])]), {
      rate: 0,
      p50Ms: 0,
      p99Ms: 0,
      cpuPer10k: 0,
      runs: 0,
      rejected: 1,
    });
  });

  it("shows ratios only when both sides were measured", () => {
    assert.equal(percent(800, 1000), "80.0%");
    assert.equal(percent(800, 0), "n/a");
    assert.equal(percent(0, 1000), "n/a");
  });
});

describe("the Markdown report", () => {
  const result: ScenarioResult = {
    id: "reads",
    rows: [
      row("Ceiling", "bare grpc-js", summarize([sample(4000), sample(4200), sample(4100)])),
      row(
        "Secured read",
        "full daemon",
        summarize([sample(3000), sample(3100, ["denied"])]),
        "75.6% of bare grpc-js",
      ),
      row("Stage cost", "audit off", summarize([sample(3000, ["denied"])])),
    ],
    commands: ["h2load -n 20000 https://127.0.0.1:PORT/x"],
    targets: [
      target("Full pipeline vs bare grpc-js", ">= 80%", "75.6%", 0.756, (r) => r >= 0.8),
      target("p99", "< 10 ms", "4 ms", 4, (p) => p < 10),
      target("Handshakes", ">= 4x", "no verified run", undefined, (x) => x >= 4),
    ],
    runs: {},
  };
  const text = renderReport([result], "heading");

  it("has one table line per row, rejected runs and missing numbers called out", () => {
    const lines = text.split("\n");
    assert.ok(lines.includes("| Ceiling | bare grpc-js | 4100 req/s | 4.10 | 41.00 | 1.00 |  |"));
    assert.ok(
      lines.includes(
        "| Secured read | full daemon | 3000 req/s | 3.00 | 30.00 | 1.00 | 75.6% of bare grpc-js; 1 of 2 runs rejected by verification |",
      ),
    );
    assert.ok(lines.includes("| Stage cost | audit off | - | - | - | - | NO VERIFIED RUN |"));
  });

  it("states each target as met, missed or not measured, and each load command", () => {
    assert.match(text, /\| Full pipeline vs bare grpc-js \| >= 80% \| 75\.6% \| \*\*NO\*\* \|/);
    assert.match(text, /\| p99 \| < 10 ms \| 4 ms \| yes \|/);
    assert.match(text, /\| Handshakes \| >= 4x \| no verified run \| not measured \|/);
    assert.match(text, /- reads: `h2load -n 20000 https:\/\/127\.0\.0\.1:PORT\/x`/);
  });
});
