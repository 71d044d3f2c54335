import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { nodeKey } from "../core/index.js";
import { AVOID_FAILED_TARGET_MS, createFailedTargets, FIRST_AVOID_MS } from "./failed-targets.js";

describe("createFailedTargets", () => {
  it("avoids a node that failed to restart a VM for a while, for that VM only, whatever the case of its id", () => {
    const t = createFailedTargets(nodeKey);
    assert.equal(t.avoid("vm-1", 0), undefined);
    t.failed("vm-1", "Node-B", 1_000);
    assert.deepEqual(
      [...(t.avoid("vm-1", 2_000)?.keys() ?? [])],
      ["node-b"],
      "keyed as the planner compares nodes",
    );
    assert.match(t.avoid("vm-1", 2_000)?.get("node-b") ?? "", /failed to restart this vm/);
    assert.equal(t.avoid("vm-2", 2_000), undefined);
    assert.equal(t.avoid("vm-1", 1_000 + FIRST_AVOID_MS), undefined, "tried again after");
  });

  it("avoids a node failing again longer each time, up to the longest", () => {
    const t = createFailedTargets(nodeKey);
    let at = 0;
    let span = FIRST_AVOID_MS;
    for (let i = 0; i < 10; i++) {
      t.failed("vm-1", "node-b", at);
      assert.ok(t.avoid("vm-1", at + span - 1), `avoided ${span} ms after failure ${i + 1}`);
      assert.equal(t.avoid("vm-1", at + span), undefined, `asked again after failure ${i + 1}`);
      at += span;
      span = Math.min(AVOID_FAILED_TARGET_MS, span * 2);
    }
    assert.equal(span, AVOID_FAILED_TARGET_MS);
  });

  it("forgets a VM's failed nodes once it was restarted", () => {
    const t = createFailedTargets(nodeKey);
    t.failed("vm-1", "node-b", 0);
    t.failed("vm-1", "node-c", 0);
    assert.equal(t.avoid("vm-1", 1)?.size, 2);
    t.restarted("vm-1");
    assert.equal(t.avoid("vm-1", 1), undefined);
  });
});
