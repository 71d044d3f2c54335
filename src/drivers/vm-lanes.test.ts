import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createVmLanes } from "./vm-lanes.js";

/** A promise settled from outside. */
function gate() {
  let open: () => void = () => {};
  let fail: (e: Error) => void = () => {};
  const p = new Promise<void>((resolve, reject) => {
    open = resolve;
    fail = reject;
  });
  return { p, open, fail };
}
const tick = () => new Promise((r) => setImmediate(r));

describe("VM lanes", () => {
  it("one VM's tasks run one at a time in order, whether earlier ones succeed or fail; other VMs do not wait", async () => {
    const lanes = createVmLanes();
    const log: string[] = [];
    const first = gate();
    const second = gate();
    const a1 = lanes.run("a", async () => {
      log.push("a1 start");
      await first.p;
      log.push("a1 end");
    });
    const a2 = lanes.run("a", async () => {
      log.push("a2 start");
      await second.p;
    });
    const a3 = lanes.run("a", async () => {
      log.push("a3");
    });
    const b1 = lanes.run("b", async () => {
      log.push("b1");
    });
    const none = lanes.run("", async () => {
      log.push("no vm");
    });
    await Promise.all([b1, none]);
    assert.deepEqual(log, ["a1 start", "b1", "no vm"], "b and no-vm went at once");
    first.open();
    await a1;
    await tick();
    assert.deepEqual(log.slice(3), ["a1 end", "a2 start"], "a2 after a1, a3 not yet");
    second.fail(new Error("a2 failed"));
    await assert.rejects(a2, /a2 failed/);
    await a3;
    assert.equal(log.at(-1), "a3", "a3 after a2 failed");
    await lanes.run("a", async () => log.push("a4"));
    assert.equal(log.at(-1), "a4");
  });
});
