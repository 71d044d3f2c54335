import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { boundedEach } from "./bounded-each.js";

/** Work that waits until told, counting how many wait at once. */
function heldWork() {
  const waiting = new Map<number, () => void>();
  let inFlight = 0;
  let most = 0;
  const started: number[] = [];
  return {
    started,
    most: () => most,
    waiting,
    async work(n: number): Promise<boolean | undefined> {
      started.push(n);
      inFlight++;
      most = Math.max(most, inFlight);
      try {
        await new Promise<void>((resolve) => waiting.set(n, resolve));
      } finally {
        waiting.delete(n);
        inFlight--;
      }
      return undefined;
    },
  };
}

const tick = () => new Promise((r) => setImmediate(r));

describe("boundedEach", () => {
  it("runs at most `limit` at once, and one held item does not hold up those behind it", async () => {
    const w = heldWork();
    const done = boundedEach([1, 2, 3, 4, 5, 6], 2, new AbortController().signal, (n) => w.work(n));
    await tick();
    assert.deepEqual(w.started, [1, 2]);
    // 1 is held; 2 finishing lets 3 in, then 4, then 5 and 6.
    for (const n of [2, 3, 4, 5, 6]) {
      w.waiting.get(n)?.();
      await tick();
    }
    assert.deepEqual(w.started, [1, 2, 3, 4, 5, 6]);
    w.waiting.get(1)?.();
    assert.equal(await done, true);
    assert.equal(w.most(), 2);
  });

  it("starts nothing more once an item answers false or the signal aborts, and waits for those under way", async () => {
    const ac = new AbortController();
    const w = heldWork();
    const done = boundedEach([1, 2, 3, 4], 2, ac.signal, (n) =>
      n === 2 ? Promise.resolve(false) : w.work(n),
    );
    await tick();
    assert.deepEqual(w.started, [1]);
    let settled = false;
    void done.then(() => {
      settled = true;
    });
    await tick();
    assert.equal(settled, false, "waits for 1");
    w.waiting.get(1)?.();
    assert.equal(await done, false);
    assert.deepEqual(w.started, [1]);

    ac.abort();
    const w2 = heldWork();
    const aborted = boundedEach([1, 2, 3], 1, ac.signal, (n) => w2.work(n));
    assert.equal(await aborted, false);
    assert.deepEqual(w2.started, []);
  });

  it("rethrows the first error once those under way have finished, starting nothing after it", async () => {
    const w = heldWork();
    const done = boundedEach([1, 2, 3], 2, new AbortController().signal, (n) =>
      n === 2 ? Promise.reject(new Error("two")) : w.work(n),
    );
    await tick();
    w.waiting.get(1)?.();
    await assert.rejects(done, /two/);
    assert.deepEqual(w.started, [1]);
  });
});
