// Where a V8 CPU profile (node --cpu-prof) spent its samples, so a profiling
// run prints a first answer beside the file it wrote.

/** The parts of a .cpuprofile this reads. */
export interface CpuProfile {
  readonly nodes: readonly {
    readonly id: number;
    readonly callFrame: {
      readonly functionName: string;
      readonly url: string;
      readonly lineNumber: number;
    };
    readonly hitCount?: number;
  }[];
}

/** A function and its share of the busy samples (self time; idle samples left out). */
export interface HotFunction {
  readonly name: string;
  /** file:line (1-based), from the first dist/ or node_modules/ folder on. */
  readonly where: string;
  readonly selfPercent: number;
}

/**
 * The `n` functions with the most self samples, as shares of the samples in
 * which the process was not idle (a server under test idles while the other
 * variants are measured); one entry per function, whatever its call paths.
 */
export function hotFunctions(profile: CpuProfile, n: number): HotFunction[] {
  const byFunction = new Map<string, { name: string; where: string; hits: number }>();
  let total = 0;
  for (const node of profile.nodes) {
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === "(idle)") continue;
    const hits = node.hitCount ?? 0;
    total += hits;
    const file = url.replace(/^file:\/\//, "").replace(/^.*?\/(?=(dist|node_modules)\/)/, "");
    const where = file === "" ? "" : `${file}:${lineNumber + 1}`;
    const name = functionName === "" ? "(anonymous)" : functionName;
    const key = `${name} ${where}`;
    const entry = byFunction.get(key) ?? { name, where, hits: 0 };
    entry.hits += hits;
    byFunction.set(key, entry);
  }
  return [...byFunction.values()]
    .filter((e) => e.hits > 0)
    .sort((a, b) => b.hits - a.hits)
    .slice(0, n)
    .map((e) => ({
      name: e.name,
      where: e.where,
      selfPercent: (e.hits / Math.max(1, total)) * 100,
    }));
}
