import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createManualClock, silentLogger } from "../core/index.js";
import {
  createFailoverDecisions,
  FAILURE_QUIET_MS,
  type FailoverDecision,
} from "./failover-decisions.js";

/** Decisions told (handed to the audit trail) by a fresh {@link createFailoverDecisions} on a manual clock. */
function told() {
  const clock = createManualClock(1_000_000);
  const audited: FailoverDecision[] = [];
  const decisions = createFailoverDecisions({
    logger: silentLogger,
    clock,
    onDecision: (d) => {
      audited.push(d);
    },
  });
  const fail = (reason: string, detail: string) =>
    decisions.decide({
      vmId: "vm-1",
      node: "node-d",
      tenant: "t1",
      action: "failed",
      detail,
      reason,
    });
  return { clock, audited, decisions, fail };
}

describe("failover decisions", () => {
  it("tells a failure once however its node words it, pass after pass", () => {
    const { clock, audited, fail } = told();
    // A hostile target answers every restart (a pass every 2 s, for 10 minutes) with a new message.
    for (let pass = 0; pass < 300; pass++) {
      fail("BACKEND_FAILED", `no, and this is refusal number ${pass}`);
      clock.advance(2_000);
    }
    assert.deepEqual(
      audited.map((d) => d.detail),
      ["no, and this is refusal number 0"],
    );
  });

  it("tells failures of changing codes at most once a minute", () => {
    const { clock, audited, fail } = told();
    const codes = ["BACKEND_FAILED", "BACKEND_TIMEOUT", "CAPACITY_EXHAUSTED"];
    // 10 minutes of passes 2 s apart, each failing with the next code and a new message.
    for (let pass = 0; pass < 300; pass++) {
      fail(codes[pass % codes.length] as string, `answer ${pass}`);
      clock.advance(2_000);
    }
    const minutes = (300 * 2_000) / FAILURE_QUIET_MS;
    assert.ok(
      audited.length <= minutes + 1,
      `${audited.length} failures told in ${minutes} minutes`,
    );
    assert.ok(audited.length >= minutes - 1, "each new failure is told once the minute is out");
    for (let i = 1; i < audited.length; i++)
      assert.notEqual(audited[i]?.reason, audited[i - 1]?.reason);
  });

  it("tells a restart at once after a failure, and a failure at once after a restart", () => {
    const { clock, audited, decisions, fail } = told();
    fail("BACKEND_FAILED", "first");
    clock.advance(2_000);
    decisions.decide({
      vmId: "vm-1",
      node: "node-d",
      tenant: "t1",
      action: "restarted",
      detail: "restarted on node-c",
    });
    clock.advance(2_000);
    fail("BACKEND_FAILED", "second");
    clock.advance(2_000);
    fail("BACKEND_TIMEOUT", "third, within the minute of the second");
    assert.deepEqual(
      audited.map((d) => `${d.action}: ${d.detail}`),
      ["failed: first", "restarted: restarted on node-c", "failed: second"],
    );
  });

  it("tells every restart, also one like the last", () => {
    const { clock, audited, decisions } = told();
    const restarted = {
      vmId: "vm-1",
      node: "node-a",
      tenant: "t1",
      action: "restarted" as const,
      detail: "started again on node-a, which had stopped it while cut off",
    };
    decisions.decide(restarted);
    clock.advance(2_000);
    // Its node fenced it again, and it was started again: two starts, two records.
    decisions.decide(restarted);
    assert.equal(audited.length, 2);
  });

  it("says why a VM is not restarted, not that its node is down (the HA restore skips on a node that is back)", () => {
    const events: { type: string; message: string }[] = [];
    const decisions = createFailoverDecisions({
      logger: silentLogger,
      events: { emit: (e) => events.push({ type: e.type, message: e.message }) },
    });
    decisions.decide({
      vmId: "vm-1",
      node: "node-a",
      tenant: "t1",
      action: "skipped",
      detail: "restart limit reached (3 in 60 min)",
    });
    assert.deepEqual(events, [
      {
        type: "FailoverSkipped",
        message: "not restarted (its node node-a): restart limit reached (3 in 60 min)",
      },
    ]);
  });

  it("keeps each VM's failures apart", () => {
    const { audited, decisions } = told();
    for (const vmId of ["vm-1", "vm-2"])
      decisions.decide({
        vmId,
        node: "node-d",
        tenant: "t1",
        action: "failed",
        detail: "no",
        reason: "BACKEND_FAILED",
      });
    assert.deepEqual(
      audited.map((d) => d.vmId),
      ["vm-1", "vm-2"],
    );
  });
});
