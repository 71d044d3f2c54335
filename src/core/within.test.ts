import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { within } from "./within.js";

describe("within", () => {
  it("answers as the promise does when it settles first", async () => {
    assert.equal(await within(Promise.resolve(7), 1000, "late"), 7);
    await assert.rejects(within(Promise.reject(new Error("refused")), 1000, "late"), /refused/);
  });

  it("rejects with the message once the time passed first", async () => {
    const started = Date.now();
    // Its timer does not hold the process open: the test does, meanwhile.
    const keep = setTimeout(() => {}, 5000);
    try {
      await assert.rejects(within(new Promise(() => {}), 50, "not taken within 0.05 s"), {
        message: "not taken within 0.05 s",
      });
    } finally {
      clearTimeout(keep);
    }
    assert.ok(Date.now() - started >= 45);
  });
});
