import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RpcError } from "../core/index.js";
import { LOST, retryWhileLost } from "./retry-while-lost.js";

/** An attempt that loses `losses` times, then answers "won"; records the numbers it was given. */
function losing(losses: number): {
  attempt: (n: number) => Promise<string | typeof LOST>;
  seen: number[];
} {
  const seen: number[] = [];
  return {
    seen,
    attempt: async (n) => {
      seen.push(n);
      return seen.length > losses ? "won" : LOST;
    },
  };
}

describe("retryWhileLost", () => {
  it("answers the first attempt's result when it did not lose, trying once", async () => {
    const { attempt, seen } = losing(0);
    assert.equal(await retryWhileLost(8, attempt), "won");
    assert.deepEqual(seen, [0]);
  });

  it("runs again while an attempt answers LOST, giving each its 0-based number", async () => {
    const { attempt, seen } = losing(3);
    assert.equal(await retryWhileLost(8, attempt), "won");
    assert.deepEqual(seen, [0, 1, 2, 3]);
  });

  it("wins on the last allowed attempt", async () => {
    const { attempt, seen } = losing(3);
    assert.equal(await retryWhileLost(4, attempt), "won");
    assert.deepEqual(seen, [0, 1, 2, 3]);
  });

  it("rejects with CONFLICT after the bound by default, trying exactly that often", async () => {
    const { attempt, seen } = losing(Number.POSITIVE_INFINITY);
    await assert.rejects(
      retryWhileLost(4, attempt),
      (err) => err instanceof RpcError && err.reason === "CONFLICT",
    );
    assert.deepEqual(seen, [0, 1, 2, 3]);
  });

  it("throws what exhausted throws after the bound", async () => {
    const { attempt, seen } = losing(Number.POSITIVE_INFINITY);
    await assert.rejects(
      retryWhileLost(3, attempt, () => {
        throw new RpcError("MIGRATION_IN_PROGRESS", { message: "look again" });
      }),
      (err) => err instanceof RpcError && err.reason === "MIGRATION_IN_PROGRESS",
    );
    assert.equal(seen.length, 3);
  });

  it("answers what exhausted returns after the bound", async () => {
    const { attempt, seen } = losing(Number.POSITIVE_INFINITY);
    assert.equal(await retryWhileLost(2, attempt, () => "given up"), "given up");
    assert.equal(seen.length, 2);
  });

  it("ends at once when an attempt throws, without running another or exhausted", async () => {
    let runs = 0;
    let gaveUp = false;
    const boom = new Error("boom");
    await assert.rejects(
      retryWhileLost<string>(
        8,
        async () => {
          runs += 1;
          if (runs === 2) throw boom;
          return LOST;
        },
        () => {
          gaveUp = true;
          return "given up";
        },
      ),
      (err) => err === boom,
    );
    assert.equal(runs, 2);
    assert.equal(gaveUp, false);
  });

  it("answers falsy results as results, not as losses", async () => {
    assert.equal(await retryWhileLost(3, async () => undefined), undefined);
    assert.equal(await retryWhileLost(3, async () => false), false);
  });
});
