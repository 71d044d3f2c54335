import { writeFileSync } from "node:fs";

/** What a history line records. */
export type HistoryKind = "op" | "reply" | "fault" | "observe" | "violation" | "note";

/** One timestamped line of a chaos run's history. */
export interface HistoryEntry {
  /** Milliseconds since the run started. */
  readonly t: number;
  readonly kind: HistoryKind;
  readonly text: string;
}

/** A violation of a checked property, with the history line it was found at. */
export interface Violation {
  readonly t: number;
  readonly property: string;
  readonly text: string;
}

/**
 * Everything a chaos run did and saw, in order: operations with their
 * replies, faults, the checker's observations (each change of what runs
 * where) and violations. Printed, with the seed, for any violation.
 */
export interface ChaosHistory {
  readonly seed: number;
  readonly entries: HistoryEntry[];
  readonly violations: Violation[];
  /** Milliseconds since the run started. */
  now(): number;
  add(kind: HistoryKind, text: string): void;
  violation(property: string, text: string): void;
  /** Counts of lines by kind and first word (`fault partition`: 3). */
  counts(kind: HistoryKind): Map<string, number>;
  /** The report of a failed run: seed, violations, the last `tail` lines; the whole history goes to `file`. */
  render(file: string, tail?: number): string;
}

export function createHistory(seed: number): ChaosHistory {
  const t0 = Date.now();
  const entries: HistoryEntry[] = [];
  const violations: Violation[] = [];
  const now = () => Date.now() - t0;
  const line = (e: HistoryEntry) =>
    `${(e.t / 1000).toFixed(3).padStart(9)} s  ${e.kind.padEnd(9)} ${e.text}`;
  return {
    seed,
    entries,
    violations,
    now,
    add(kind, text) {
      entries.push({ t: now(), kind, text });
    },
    violation(property, text) {
      const t = now();
      violations.push({ t, property, text });
      entries.push({ t, kind: "violation", text: `${property}: ${text}` });
    },
    counts(kind) {
      const out = new Map<string, number>();
      for (const e of entries) {
        if (e.kind !== kind) continue;
        const word = e.text.split(" ")[0] ?? "";
        out.set(word, (out.get(word) ?? 0) + 1);
      }
      return out;
    },
    render(file, tail = 300) {
      writeFileSync(file, `${entries.map(line).join("\n")}\n`);
      const first = violations[0]?.t ?? now();
      // The lines up to a little after the first violation: what led to it.
      const upTo = entries.filter((e) => e.t <= first + 2000);
      return [
        `chaos run with seed ${seed}: ${violations.length} violation(s)`,
        ...violations
          .slice(0, 20)
          .map((v) => `  at ${(v.t / 1000).toFixed(3)} s: ${v.property}: ${v.text}`),
        `history (last ${tail} lines up to the first violation; all of it in ${file}):`,
        ...upTo.slice(-tail).map(line),
        `seed ${seed}: rerun with  npm run chaos -- --seed ${seed}`,
      ].join("\n");
    },
  };
}
