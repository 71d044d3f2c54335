import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { fenceDelayAllows, fenceMarginMs, selfFenceWindowMs } from "./fence-timing.js";

describe("selfFenceWindowMs", () => {
  it("ok-gives agents two thirds of the default fence delay", () => {
    assert.equal(selfFenceWindowMs(60_000), 40_000);
    assert.equal(fenceMarginMs(40_000), 8000);
  });

  it("ok-derives a window the fence delay allows, for any fence delay the schema accepts", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1000, max: 86_400_000 }), (delay) => {
        const window = selfFenceWindowMs(delay);
        return window > 0 && fenceDelayAllows(delay, window);
      }),
    );
  });

  it("fail-a window as long as the fence delay is never allowed", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 86_400_000 }),
        (delay) => !fenceDelayAllows(delay, delay),
      ),
    );
  });
});
