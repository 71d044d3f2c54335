/** How many snapshots to keep, combined as a union (a snapshot any rule keeps is kept). */
export interface RetentionRule {
  /** The N newest. */
  readonly keepLast: number;
  /** The newest of each of the last N UTC days, today included. */
  readonly keepDailyDays: number;
  /** The newest of each of the last N ISO weeks (Monday to Sunday, UTC), this week included. */
  readonly keepWeeklyWeeks: number;
}

/** A snapshot as retention sees it. */
export interface RetentionCandidate {
  readonly name: string;
  readonly createdMs: number;
  /** Held, protected or needed as a replication base: never removed. */
  readonly pinned: boolean;
}

/** What a policy does to a dataset's snapshots; each list oldest first. */
export interface RetentionPlan {
  /** Kept because a rule keeps them (or they are newer than now). */
  readonly keep: readonly string[];
  /** Outside every rule but pinned, so kept. */
  readonly keepPinned: readonly string[];
  readonly remove: readonly string[];
}

const DAY_MS = 86_400_000;

/** The UTC day number of an instant (0 is 1970-01-01, a Thursday). */
export function utcDay(ms: number): number {
  return Math.floor(ms / DAY_MS);
}

/** The ISO week number of an instant counted from the week of 1970-01-01 (weeks start on Monday). */
export function isoWeek(ms: number): number {
  return Math.floor((utcDay(ms) + 3) / 7);
}

/** Oldest first; equal times by name, so "newest" is always well defined. */
export function byAge(a: RetentionCandidate, b: RetentionCandidate): number {
  return a.createdMs - b.createdMs || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
}

/**
 * Applies a retention rule at `nowMs`. A pure function: the same snapshots,
 * rule and time always give the same plan. Snapshots created after `nowMs`
 * (clock skew between nodes) are always kept.
 */
export function planRetention(
  snapshots: readonly RetentionCandidate[],
  rule: RetentionRule,
  nowMs: number,
): RetentionPlan {
  const today = utcDay(nowMs);
  const thisWeek = isoWeek(nowMs);
  const keep: string[] = [];
  const keepPinned: string[] = [];
  const remove: string[] = [];
  const daysSeen = new Set<number>();
  const weeksSeen = new Set<number>();
  let newerKept = 0;
  const newestFirst = [...snapshots].sort(byAge).reverse();
  const decided = new Map<string, "keep" | "pinned" | "remove">();
  for (const s of newestFirst) {
    const day = utcDay(s.createdMs);
    const week = isoWeek(s.createdMs);
    // The first snapshot met of a day (or week), walking from the newest, is that day's newest.
    const newestOfDay = !daysSeen.has(day);
    const newestOfWeek = !weeksSeen.has(week);
    daysSeen.add(day);
    weeksSeen.add(week);
    const kept =
      s.createdMs > nowMs ||
      newerKept < rule.keepLast ||
      (newestOfDay && day <= today && day > today - rule.keepDailyDays) ||
      (newestOfWeek && week <= thisWeek && week > thisWeek - rule.keepWeeklyWeeks);
    newerKept += 1;
    decided.set(s.name, kept ? "keep" : s.pinned ? "pinned" : "remove");
  }
  for (const s of [...snapshots].sort(byAge)) {
    const d = decided.get(s.name);
    (d === "keep" ? keep : d === "pinned" ? keepPinned : remove).push(s.name);
  }
  return { keep, keepPinned, remove };
}

/** True when the rule keeps nothing at all (every count zero): refused, it would delete everything. */
export function keepsNothing(rule: RetentionRule): boolean {
  return rule.keepLast === 0 && rule.keepDailyDays === 0 && rule.keepWeeklyWeeks === 0;
}
