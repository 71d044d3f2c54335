import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createWatchOutage } from "./watch-outage.js";

/** An outage on a clock the test moves. */
function outage(elsewhere: boolean, budgetMs: number) {
  let t = 1000;
  const o = createWatchOutage({ elsewhere, budgetMs, now: () => t });
  return { o, advance: (ms: number) => (t += ms) };
}

describe("a watch's outage rules", () => {
  it("back off 100 ms doubling to 2 s, within the budget, and end once it is spent", () => {
    const { o, advance } = outage(true, 5000);
    const waits: (number | undefined)[] = [];
    for (let i = 0; i < 7; i++) {
      const w = o.retryIn();
      waits.push(w);
      advance(w ?? 0);
    }
    // 100 + 200 + 400 + 800 + 1600 = 3100; then 1900 left of the budget; then none.
    assert.deepEqual(waits, [100, 200, 400, 800, 1600, 1900, undefined]);
    o.confirmed();
    assert.equal(o.retryIn(), 100, "a confirmation ends the outage: a new budget and backoff");
  });

  it("give one attempt 2.5 s when other members can take the watch, then the next the whole budget again", () => {
    const { o, advance } = outage(true, 10_000);
    assert.deepEqual(o.confirmation(), { waitMs: 2500, cut: true });
    advance(2500);
    o.unconfirmed(true);
    assert.deepEqual(o.confirmation(), { waitMs: 10_000, cut: false });
    // With no other member, the first attempt waits out the budget.
    const alone = outage(false, 10_000).o;
    assert.deepEqual(alone.confirmation(), { waitMs: 10_000, cut: false });
  });

  it("after a silent stream, wait for a confirmation as long as it takes once the cut attempt is spent, and keep off its member", () => {
    const { o, advance } = outage(true, 10_000);
    o.confirmed();
    const silent = {};
    o.moved(silent);
    assert.equal(o.avoid, silent);
    assert.deepEqual(o.confirmation(), { waitMs: 2500, cut: true });
    advance(2500);
    o.unconfirmed(true);
    const other = {};
    assert.equal(o.retryIn(other), 100);
    assert.equal(o.avoid, other);
    assert.equal(o.confirmation(), undefined, "patient: no deadline");
    o.broken();
    assert.deepEqual(
      o.confirmation(),
      { waitMs: 10_000, cut: false },
      "an error makes it bounded again",
    );
  });

  it("ask an unconfirmed stream at once after the first move, then after 8, 16, 32 and 60 s", () => {
    const { o, advance } = outage(true, 10_000);
    o.confirmed();
    assert.equal(o.mayAskUnconfirmed(), false, "not patient: only confirmed streams are asked");
    const graces: number[] = [];
    for (let move = 1; move <= 6; move++) {
      o.moved({});
      o.opened();
      let waited = 0;
      while (!o.mayAskUnconfirmed()) {
        advance(1000);
        waited += 1000;
      }
      graces.push(waited);
    }
    assert.deepEqual(graces, [0, 8000, 16_000, 32_000, 60_000, 60_000]);
    o.confirmed();
    o.moved({});
    o.opened();
    assert.equal(o.mayAskUnconfirmed(), true, "a confirmation starts the count again");
  });
});
