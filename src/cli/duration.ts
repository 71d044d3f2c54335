import { UsageError } from "./cli-errors.js";

/** Parses `500ms`, `30s`, `15m`, `2h` or `30d` into milliseconds; a UsageError naming the flag on anything else. */
export function parseDuration(flag: string, text: string): number {
  const m = /^(\d{1,9})(ms|s|m|h|d)$/.exec(text);
  if (m === null)
    throw new UsageError(`${flag}: expected a duration like 30s, 15m, 2h or 30d, got "${text}"`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[
    m[2] as "ms" | "s" | "m" | "h" | "d"
  ];
  return Number(m[1]) * unit;
}

const BYTE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1000,
  kb: 1000,
  m: 1e6,
  mb: 1e6,
  g: 1e9,
  gb: 1e9,
  t: 1e12,
  tb: 1e12,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
  pib: 1024 ** 5,
};

/** Parses a size like `64GiB`, `1.5 TiB`, `500M` or `4096` into bytes; a UsageError naming the flag otherwise. */
export function parseBytes(flag: string, text: string): bigint {
  const m = /^(\d{1,15}(?:\.\d{1,3})?)\s*([A-Za-z]*)$/.exec(text.trim());
  const unit = m === null ? undefined : BYTE_UNITS[(m[2] ?? "").toLowerCase()];
  if (m === null || unit === undefined)
    throw new UsageError(`${flag}: expected a size like 64GiB, 1.5TiB or 500MB, got "${text}"`);
  const bytes = Math.round(Number(m[1]) * unit);
  if (!Number.isSafeInteger(bytes)) throw new UsageError(`${flag}: "${text}" is too large`);
  return BigInt(bytes);
}

/** Parses repeated `key=value` flags into a map; a UsageError naming the flag on a bad one. */
export function parseLabels(
  flag: string,
  pairs: readonly string[] | undefined,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of pairs ?? []) {
    const at = s.indexOf("=");
    if (at <= 0) throw new UsageError(`${flag}: expected key=value, got "${s}"`);
    out[s.slice(0, at)] = s.slice(at + 1);
  }
  return out;
}

/** Splits a comma-separated flag value, dropping blanks. */
export function splitList(text: string | undefined): string[] {
  return (text ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

/** Parses a whole number from `min` to `max`; a UsageError naming the flag otherwise. */
export function parseWhole(flag: string, text: string, min: number, max: number): number {
  const n = /^\d{1,10}$/.test(text.trim()) ? Number(text.trim()) : Number.NaN;
  if (!(n >= min && n <= max))
    throw new UsageError(`${flag}: expected a whole number from ${min} to ${max}, got "${text}"`);
  return n;
}
