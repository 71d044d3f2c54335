// A flood of distinct identities against a full rate limiter: what each new
// caller costs once the limiter holds its bound (100,000 buckets) and drops
// the least recently used one for it, and what a call of one of 50 known
// callers costs after it. "this" is the daemon's limiter
// (src/security/rate-limiter.ts, on the recency map of src/core); "plain
// Map" is the same limiter dropping its oldest bucket with
// `map.keys().next()`, as it did before 7 December 2026. Variants alternate
// within each round; the table reports medians over the rounds.
//
//   npm run build && node dist/bench/rate-limit-flood.js --callers 100000 --rounds 3
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { createManualClock } from "../src/core/index.js";
import { type BucketLimit, createRateLimiter } from "../src/security/index.js";
import { median } from "./bench-support.js";

const { values } = parseArgs({
  options: {
    callers: { type: "string", default: "100000" },
    rounds: { type: "string", default: "3" },
  },
});
const CALLERS = Math.min(1_000_000, Math.max(1000, Number(values.callers)));
const ROUNDS = Math.min(20, Math.max(1, Number(values.rounds)));
const BOUND = 100_000;
const limit: BucketLimit = { ratePerSecond: 10, burst: 20 };

/** The limiter's take as it was: a plain Map, its oldest key found from the front. */
function plainMapTake() {
  const buckets = new Map<string, { tokens: number }>();
  return (key: string) => {
    let b = buckets.get(key);
    if (b === undefined) {
      b = { tokens: limit.burst };
      if (buckets.size >= BOUND) buckets.delete(buckets.keys().next().value as string);
    } else buckets.delete(key);
    buckets.set(key, b);
    b.tokens -= 1;
  };
}

function thisTake() {
  const limiter = createRateLimiter(createManualClock(0), BOUND);
  return (key: string) => void limiter.take(key, 1, limit);
}

/**
 * µs per call, once the limiter is full: of the flood's new callers, then of
 * 50 known callers calling in turn (each call moves its bucket to the end).
 */
function flood(take: (key: string) => void): { flood: number; known: number } {
  for (let i = 0; i < BOUND; i++) take(`fill-${i}`);
  const t0 = performance.now();
  for (let i = 0; i < CALLERS; i++) take(`caller-${i}`);
  const t1 = performance.now();
  for (let i = 0; i < CALLERS; i++) take(`caller-${CALLERS - 1 - (i % 50)}`);
  const t2 = performance.now();
  return { flood: ((t1 - t0) * 1000) / CALLERS, known: ((t2 - t1) * 1000) / CALLERS };
}

const variants = { "plain Map": plainMapTake, this: thisTake };
const names = Object.keys(variants) as (keyof typeof variants)[];
const results = new Map(names.map((n) => [n, { flood: [] as number[], known: [] as number[] }]));
for (let round = 0; round < ROUNDS; round++) {
  const order = round % 2 === 0 ? names : [...names].reverse();
  for (const name of order) {
    const r = flood(variants[name]());
    results.get(name)?.flood.push(r.flood);
    results.get(name)?.known.push(r.known);
  }
}
const show = (us: number[]) =>
  `${median(us).toFixed(2)} µs a call (${us.map((u) => u.toFixed(2)).join(", ")})`;
console.log(`A limiter full at ${BOUND} buckets, ${CALLERS} calls each, ${ROUNDS} rounds`);
for (const [name, r] of results) {
  console.log(`${name.padEnd(10)} new callers: ${show(r.flood)}`);
  console.log(`${name.padEnd(10)} 50 known callers in turn: ${show(r.known)}`);
}
