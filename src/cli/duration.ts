/** Parses `500ms`, `30s`, `15m`, `2h` or `30d` into milliseconds; throws with the flag's name on anything else. */
export function parseDuration(flag: string, text: string): number {
  const m = /^(\d{1,9})(ms|s|m|h|d)$/.exec(text);
  if (m === null)
    throw new Error(`${flag}: expected a duration like 30s, 15m, 2h or 30d, got "${text}"`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[
    m[2] as "ms" | "s" | "m" | "h" | "d"
  ];
  return Number(m[1]) * unit;
}
