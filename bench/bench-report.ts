// What a scenario reports, the medians over its rounds, and the Markdown the
// suite prints: one table of all measurements, the targets with what was
// measured against them, and the exact load command of each scenario.
import { median } from "./bench-support.js";
import type { Sample } from "./measure.js";

/** One line of the table: medians over the runs that counted. */
export interface Row {
  readonly scenario: string;
  readonly variant: string;
  /** Calls (or, for handshakes, connections) per second. */
  readonly rate: number;
  readonly unit: "req/s" | "conn/s";
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly cpuPer10k: number;
  /** Runs that counted, and runs rejected by the verification. */
  readonly runs: number;
  readonly rejected: number;
  readonly note: string;
}

/** A target of bench/README.md and what this run measured against it. */
export interface Target {
  readonly name: string;
  readonly goal: string;
  readonly measured: string;
  /** undefined when the scenarios it needs did not run or had no verified run. */
  readonly met: boolean | undefined;
}

/** What a scenario hands back. */
export interface ScenarioResult {
  readonly id: string;
  readonly rows: readonly Row[];
  /** The exact load commands (credentials and ports as placeholders). */
  readonly commands: readonly string[];
  readonly targets: readonly Target[];
  /** Every run of every variant, in order, for the JSON. */
  readonly runs: Readonly<Record<string, readonly Sample[]>>;
  readonly details?: Readonly<Record<string, unknown>>;
}

/** Medians of the runs that counted. */
export interface Summary {
  readonly rate: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly cpuPer10k: number;
  readonly runs: number;
  readonly rejected: number;
}

/** Medians over the samples that passed verification (zeros when none did). */
export function summarize(samples: readonly Sample[]): Summary {
  const ok = samples.filter((s) => s.problems.length === 0);
  const m = (f: (s: Sample) => number) => (ok.length === 0 ? 0 : median(ok.map(f)));
  return {
    rate: m((s) => s.reqPerSec),
    p50Ms: m((s) => s.p50Ms),
    p99Ms: m((s) => s.p99Ms),
    cpuPer10k: m((s) => s.cpuPer10k),
    runs: ok.length,
    rejected: samples.length - ok.length,
  };
}

/** A row from a summary. */
export function row(
  scenario: string,
  variant: string,
  s: Summary,
  note = "",
  unit: Row["unit"] = "req/s",
): Row {
  return { scenario, variant, unit, note, ...s };
}

/** A ratio as a percentage with one decimal, or "n/a" without a denominator. */
export function percent(numerator: number, denominator: number): string {
  return denominator > 0 && numerator > 0
    ? `${((numerator / denominator) * 100).toFixed(1)}%`
    : "n/a";
}

/** A target: `ratio` (or value) compared with `bound`; unknown when either side is missing. */
export function target(
  name: string,
  goal: string,
  measured: string,
  value: number | undefined,
  test: (v: number) => boolean,
): Target {
  return {
    name,
    goal,
    measured,
    met: value === undefined || !Number.isFinite(value) ? undefined : test(value),
  };
}

const fixed = (n: number, digits: number) => (n === 0 ? "-" : n.toFixed(digits));

/** The Markdown report: measurements, targets, load commands. */
export function renderReport(results: readonly ScenarioResult[], heading: string): string {
  const lines = [
    heading,
    "",
    "| scenario | variant | throughput | p50 ms | p99 ms | server CPU s / 10k calls | notes |",
    "|---|---|---:|---:|---:|---:|---|",
  ];
  for (const r of results.flatMap((x) => x.rows)) {
    const verified =
      r.runs === 0
        ? "NO VERIFIED RUN"
        : r.rejected > 0
          ? `${r.rejected} of ${r.runs + r.rejected} runs rejected by verification`
          : "";
    const note = [r.note, verified].filter((s) => s !== "").join("; ");
    lines.push(
      `| ${r.scenario} | ${r.variant} | ${r.runs === 0 ? "-" : `${Math.round(r.rate)} ${r.unit}`} | ${fixed(r.p50Ms, 2)} | ${fixed(r.p99Ms, 2)} | ${fixed(r.cpuPer10k, 2)} | ${note} |`,
    );
  }
  const targets = results.flatMap((x) => x.targets);
  if (targets.length > 0) {
    lines.push("", "| target | goal | measured | met |", "|---|---|---|---|");
    for (const t of targets)
      lines.push(
        `| ${t.name} | ${t.goal} | ${t.measured} | ${t.met === undefined ? "not measured" : t.met ? "yes" : "**NO**"} |`,
      );
  }
  lines.push("", "Load commands:");
  for (const r of results) for (const c of r.commands) lines.push(`- ${r.id}: \`${c}\``);
  return lines.join("\n");
}
