import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  keepsNothing,
  planRetention,
  type RetentionCandidate,
  type RetentionPlan,
  type RetentionRule,
} from "./retention.js";

const DAY = 86_400_000;
const HOUR = 3_600_000;

/**
 * The reference model: each rule written out as its definition, one
 * snapshot at a time, with calendar arithmetic done by Date (the
 * implementation uses day numbers), so the two share no code.
 */
function model(
  snaps: readonly RetentionCandidate[],
  rule: RetentionRule,
  now: number,
): RetentionPlan {
  const newer = (a: RetentionCandidate, b: RetentionCandidate) =>
    a.createdMs > b.createdMs || (a.createdMs === b.createdMs && a.name > b.name);
  const dayKey = (ms: number) => new Date(ms).toISOString().slice(0, 10);
  const mondayKey = (ms: number) => {
    const d = new Date(ms);
    d.setUTCDate(d.getUTCDate() - ((d.getUTCDay() + 6) % 7));
    return d.toISOString().slice(0, 10);
  };
  const lastDays = new Set<string>();
  const lastWeeks = new Set<string>();
  for (let i = 0; i < rule.keepDailyDays; i++) lastDays.add(dayKey(now - i * DAY));
  for (let i = 0; i < rule.keepWeeklyWeeks; i++) lastWeeks.add(mondayKey(now - i * 7 * DAY));
  const keep: string[] = [];
  const keepPinned: string[] = [];
  const remove: string[] = [];
  const ordered = [...snaps].sort((a, b) => (newer(a, b) ? 1 : newer(b, a) ? -1 : 0));
  for (const s of ordered) {
    const others = snaps.filter((t) => t !== s);
    const isFuture = s.createdMs > now;
    const inLast = others.filter((t) => newer(t, s)).length < rule.keepLast;
    const newestOfItsDay = !others.some(
      (t) => dayKey(t.createdMs) === dayKey(s.createdMs) && newer(t, s),
    );
    const newestOfItsWeek = !others.some(
      (t) => mondayKey(t.createdMs) === mondayKey(s.createdMs) && newer(t, s),
    );
    const daily = newestOfItsDay && lastDays.has(dayKey(s.createdMs));
    const weekly = newestOfItsWeek && lastWeeks.has(mondayKey(s.createdMs));
    if (isFuture || inLast || daily || weekly) keep.push(s.name);
    else if (s.pinned) keepPinned.push(s.name);
    else remove.push(s.name);
  }
  return { keep, keepPinned, remove };
}

const NOW = Date.UTC(2026, 10, 22, 14, 5, 2); // a Sunday afternoon

const history = fc
  .uniqueArray(
    fc.record({
      name: fc.stringMatching(/^[a-z]{1,3}-[0-9]{1,3}$/),
      // Whole hours over ~10 weeks (many share a day), some exactly equal, a few in the future.
      createdMs: fc.integer({ min: -1700, max: 30 }).map((h) => NOW + h * HOUR),
      pinned: fc.boolean(),
    }),
    { selector: (s) => s.name, maxLength: 60 },
  )
  .filter((snaps) => snaps.length > 0);
const rule = fc.record({
  keepLast: fc.integer({ min: 0, max: 8 }),
  keepDailyDays: fc.integer({ min: 0, max: 14 }),
  keepWeeklyWeeks: fc.integer({ min: 0, max: 10 }),
});
const now = fc.integer({ min: -3 * 24, max: 3 * 24 }).map((h) => NOW + h * HOUR + 1234);

describe("planRetention", () => {
  it("agrees with the reference model on random histories, rules and times", () => {
    fc.assert(
      fc.property(history, rule, now, (snaps, r, at) => {
        assert.deepEqual(planRetention(snaps, r, at), model(snaps, r, at));
      }),
      { numRuns: 500 },
    );
  });

  it("never removes a pinned snapshot and accounts for every snapshot exactly once", () => {
    fc.assert(
      fc.property(history, rule, now, (snaps, r, at) => {
        const plan = planRetention(snaps, r, at);
        const all = [...plan.keep, ...plan.keepPinned, ...plan.remove].sort();
        assert.deepEqual(all, snaps.map((s) => s.name).sort());
        for (const s of snaps.filter((x) => x.pinned)) assert.ok(!plan.remove.includes(s.name));
      }),
      { numRuns: 300 },
    );
  });

  it("keeps more (never less) when any count grows", () => {
    fc.assert(
      fc.property(
        history,
        rule,
        now,
        fc.constantFrom("keepLast", "keepDailyDays", "keepWeeklyWeeks"),
        (snaps, r, at, k) => {
          const before = new Set(planRetention(snaps, r, at).remove);
          const after = planRetention(snaps, { ...r, [k]: r[k as keyof RetentionRule] + 1 }, at);
          for (const name of after.remove) assert.ok(before.has(name), `${name} newly removed`);
        },
      ),
      { numRuns: 200 },
    );
  });

  const at = (iso: string): RetentionCandidate => ({
    name: iso,
    createdMs: Date.parse(iso),
    pinned: false,
  });

  it("keeps the newest snapshot of each of the last N days, today included", () => {
    const snaps = [
      at("2026-11-20T01:00:00Z"),
      at("2026-11-20T23:00:00Z"),
      at("2026-11-21T08:00:00Z"),
      at("2026-11-22T09:00:00Z"),
      at("2026-11-22T12:00:00Z"),
    ];
    const plan = planRetention(snaps, { keepLast: 0, keepDailyDays: 2, keepWeeklyWeeks: 0 }, NOW);
    assert.deepEqual(plan.keep, ["2026-11-21T08:00:00Z", "2026-11-22T12:00:00Z"]);
    assert.deepEqual(plan.remove, [
      "2026-11-20T01:00:00Z",
      "2026-11-20T23:00:00Z",
      "2026-11-22T09:00:00Z",
    ]);
  });

  it("counts ISO weeks from Monday: Sunday's snapshot and Monday's are in different weeks", () => {
    const snaps = [
      at("2026-11-08T10:00:00Z"), // Sunday, two weeks back
      at("2026-11-09T10:00:00Z"), // Monday of last week
      at("2026-11-15T23:59:59Z"), // Sunday: last week's newest
      at("2026-11-16T00:00:00Z"), // Monday: this week
      at("2026-11-22T14:00:00Z"), // Sunday: this week's newest
    ];
    const plan = planRetention(snaps, { keepLast: 0, keepDailyDays: 0, keepWeeklyWeeks: 2 }, NOW);
    assert.deepEqual(plan.keep, ["2026-11-15T23:59:59Z", "2026-11-22T14:00:00Z"]);
  });

  it("keeps the union of the rules and reports pinned snapshots it had to keep", () => {
    const snaps = [
      { ...at("2026-10-01T00:00:00Z"), pinned: true },
      at("2026-10-02T00:00:00Z"),
      at("2026-11-22T10:00:00Z"),
      at("2026-11-22T11:00:00Z"),
    ];
    const plan = planRetention(snaps, { keepLast: 1, keepDailyDays: 0, keepWeeklyWeeks: 1 }, NOW);
    assert.deepEqual(plan.keep, ["2026-11-22T11:00:00Z"]);
    assert.deepEqual(plan.keepPinned, ["2026-10-01T00:00:00Z"]);
    assert.deepEqual(plan.remove, ["2026-10-02T00:00:00Z", "2026-11-22T10:00:00Z"]);
  });

  it("keeps snapshots dated after now", () => {
    const plan = planRetention(
      [at("2026-11-23T00:00:00Z")],
      { keepLast: 0, keepDailyDays: 1, keepWeeklyWeeks: 0 },
      NOW,
    );
    assert.deepEqual(plan.keep, ["2026-11-23T00:00:00Z"]);
  });

  it("recognises a rule that keeps nothing", () => {
    assert.equal(keepsNothing({ keepLast: 0, keepDailyDays: 0, keepWeeklyWeeks: 0 }), true);
    assert.equal(keepsNothing({ keepLast: 0, keepDailyDays: 1, keepWeeklyWeeks: 0 }), false);
  });
});
