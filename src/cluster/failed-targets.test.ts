import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { nodeKey } from "../core/index.js";
import { AVOID_FAILED_TARGET_MS, createFailedTargets } from "./failed-targets.js";

describe("createFailedTargets", () => {
  it("avoids a node that failed to restart a VM for a while, for that VM only, whatever the case of its id", () => {
    const t = createFailedTargets(nodeKey);
    assert.equal(t.avoid("vm-1", 0), undefined);
    assert.equal(t.failed("vm-1", "Node-B", 1_000, "BACKEND_FAILED"), true);
    assert.deepEqual(
      [...(t.avoid("vm-1", 2_000)?.keys() ?? [])],
      ["node-b"],
      "keyed as the planner compares nodes",
    );
    assert.match(t.avoid("vm-1", 2_000)?.get("node-b") ?? "", /failed to restart this vm/);
    assert.equal(t.avoid("vm-2", 2_000), undefined);
    assert.equal(t.avoid("vm-1", 1_000 + AVOID_FAILED_TARGET_MS), undefined, "tried again after");
  });

  it("forgets a VM's failed nodes once it was restarted", () => {
    const t = createFailedTargets(nodeKey);
    t.failed("vm-1", "node-b", 0, "BACKEND_FAILED");
    t.failed("vm-1", "node-c", 0, "FENCED");
    assert.equal(t.avoid("vm-1", 1)?.size, 2);
    t.restarted("vm-1");
    assert.equal(t.avoid("vm-1", 1), undefined);
  });

  it("does not avoid a node whose recover may have started the VM (timed out, interrupted): sent elsewhere, it would run twice", () => {
    const t = createFailedTargets(nodeKey);
    for (const reason of ["BACKEND_TIMEOUT", "OPERATION_INTERRUPTED"])
      assert.equal(t.failed("vm-1", "node-b", 0, reason), false);
    assert.equal(t.avoid("vm-1", 1), undefined);
  });
});
