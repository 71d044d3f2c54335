import { invalid } from "../core/index.js";

/** A replication job's policy, parsed from `ZfsReplicationPlan.policy`. */
export interface ReplicationPolicy {
  /** How often the job runs. */
  readonly intervalMs: number;
  /** Replication snapshots kept on each side (the newest is always one of them). */
  readonly keep: number;
  /** Bytes per second; 0 is unlimited. */
  readonly bandwidthLimit: number;
}

/** The policy of an empty `policy` string. */
export const DEFAULT_POLICY: ReplicationPolicy = Object.freeze({
  intervalMs: 15 * 60_000,
  keep: 3,
  bandwidthLimit: 0,
});

const MIN_INTERVAL_MS = 60_000;
const MAX_INTERVAL_MS = 30 * 86_400_000;
const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const UNIT_BYTES: Record<string, number> = { "": 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 };

/**
 * Parses `interval=15m keep=3 bwlimit=50M` (space- or comma-separated, every
 * key optional, each at most once). Anything else is INVALID_ARGUMENT naming
 * `policy` and the offending part.
 */
export function parseReplicationPolicy(text: string): ReplicationPolicy {
  const seen = new Set<string>();
  let { intervalMs, keep, bandwidthLimit } = DEFAULT_POLICY;
  for (const part of text.split(/[\s,]+/).filter((p) => p !== "")) {
    const eq = part.indexOf("=");
    const key = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? "" : part.slice(eq + 1);
    if (seen.has(key)) throw invalid(`policy: ${key} given twice`);
    seen.add(key);
    if (key === "interval") {
      const m = /^(\d{1,7})([smhd])$/.exec(value);
      const ms = m === null ? Number.NaN : Number(m[1]) * (UNIT_MS[m[2] as string] ?? 0);
      if (!(ms >= MIN_INTERVAL_MS && ms <= MAX_INTERVAL_MS))
        throw invalid("policy: interval must be like 15m (s, m, h or d), from 1m to 30d");
      intervalMs = ms;
    } else if (key === "keep") {
      const n = /^\d{1,3}$/.test(value) ? Number(value) : Number.NaN;
      if (!(n >= 1 && n <= 100)) throw invalid("policy: keep must be 1 to 100");
      keep = n;
    } else if (key === "bwlimit") {
      const m = /^(\d{1,7})([KMG]?)$/.exec(value);
      if (m === null)
        throw invalid(
          "policy: bwlimit must be bytes per second, like 50M (K, M, G: powers of 1024)",
        );
      bandwidthLimit = Number(m[1]) * (UNIT_BYTES[m[2] as string] ?? 1);
    } else {
      throw invalid(
        `policy: unknown setting ${JSON.stringify(key.slice(0, 32))} (interval, keep, bwlimit)`,
      );
    }
  }
  return { intervalMs, keep, bandwidthLimit };
}

/** A policy name as configuration defines it (`gold`, `hourly`). */
export const POLICY_NAME = /^[A-Za-z][A-Za-z0-9_-]{0,62}$/;

/**
 * Resolves `ZfsReplicationPlan.policy` as clients of the upstream contract
 * send it: a name defined in configuration (`storage.replication.policies`,
 * e.g. `gold: "interval=15m keep=96"`) stands for its policy string; anything
 * else is parsed by {@link parseReplicationPolicy}. A bare name that is not
 * configured is INVALID_ARGUMENT naming the configured ones.
 */
export function resolveReplicationPolicy(
  text: string,
  named: Readonly<Record<string, string>> = {},
): ReplicationPolicy {
  const name = text.trim();
  if (!POLICY_NAME.test(name)) return parseReplicationPolicy(text);
  const defined = Object.hasOwn(named, name) ? named[name] : undefined;
  if (defined !== undefined) return parseReplicationPolicy(defined);
  if (["interval", "keep", "bwlimit"].includes(name)) return parseReplicationPolicy(text);
  const known = Object.keys(named).sort();
  throw invalid(
    `policy: no policy named ${JSON.stringify(name)} is configured (${known.length === 0 ? "none are" : `configured: ${known.join(", ")}`}); or give settings like "interval=15m keep=3"`,
  );
}
