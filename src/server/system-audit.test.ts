import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { failoverAuditFields, staleCopyAuditFields } from "./system-audit.js";

describe("the control plane's own acts in the audit trail", () => {
  it("an act whose outcome is not known is recorded as such (UNKNOWN, with why), not as done nor as failed", () => {
    const start = failoverAuditFields({
      vmId: "vm-1",
      node: "node-a",
      tenant: "acme",
      action: "unknown",
      detail: "start sent; its outcome is not known",
      requestId: "6f1c1a52-6d3e-4c43-9d0e-7c5a2b8e1f00",
    });
    assert.equal(start.requestId, "6f1c1a52-6d3e-4c43-9d0e-7c5a2b8e1f00", "the act's id");
    assert.deepEqual(
      [start.decision, start.code, start.error, start.tenant],
      ["unknown", "UNKNOWN", "start sent; its outcome is not known", "acme"],
    );
    const removal = staleCopyAuditFields({
      vmId: "vm-1",
      node: "node-a",
      placedOn: "node-c",
      generation: 3n,
      tenant: "acme",
      action: "unknown",
      detail: "removal sent; its outcome is not known",
    });
    assert.deepEqual(
      [removal.decision, removal.code, removal.error],
      ["unknown", "UNKNOWN", "removal sent; its outcome is not known"],
    );
    const done = failoverAuditFields({
      vmId: "vm-1",
      node: "node-a",
      tenant: "",
      action: "restarted",
      detail: "x",
    });
    assert.deepEqual([done.code, done.error], ["OK", ""]);
    const failed = staleCopyAuditFields({
      vmId: "vm-1",
      node: "node-a",
      placedOn: "node-c",
      generation: 3n,
      tenant: "",
      action: "failed",
      detail: "refused",
    });
    assert.deepEqual([failed.code, failed.error], ["FAILED_PRECONDITION", "refused"]);
  });
});
