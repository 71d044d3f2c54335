import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, fromBinary } from "@bufbuild/protobuf";
import { VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { placementChange } from "./vm-placement.js";

describe("placementChange", () => {
  it("ok-places a new vm at generation 1, only if no record exists yet", () => {
    const c = placementChange("vm-1", { rec: undefined, rev: 0 }, "n1", { tenant: "acme" });
    assert.equal(c.generation, 1n);
    assert.deepEqual(c.compare, { key: "vms/vm-1", modRevision: 0 });
    assert.equal(c.op.type, "put");
    const stored = fromBinary(VmRecordSchema, c.op.type === "put" ? c.op.value : new Uint8Array());
    assert.deepEqual(
      [stored.id, stored.nodeId, stored.tenant, stored.generation],
      ["vm-1", "n1", "acme", 1n],
    );
  });

  it("drops a stale copy recorded on the node the vm moves to: it is the placement now, never cleaned up", () => {
    // Seen in the chaos test: an orphaned migration's target reported the vm before the
    // migration was settled (a stale copy then); the settle's commit placed it there, and the
    // conflict cleanup force-stopped the vm on its own node.
    const rec = create(VmRecordSchema, {
      id: "vm-1",
      nodeId: "n1",
      generation: 2n,
      staleCopies: [
        { nodeId: "n2", generation: 2n },
        { nodeId: "n3", generation: 1n },
      ],
    });
    const c = placementChange("vm-1", { rec, rev: 9 }, "n2");
    assert.deepEqual(
      c.record.staleCopies.map((s) => s.nodeId),
      ["n3"],
    );
    const stored = fromBinary(VmRecordSchema, c.op.type === "put" ? c.op.value : new Uint8Array());
    assert.deepEqual(
      stored.staleCopies.map((s) => s.nodeId),
      ["n3"],
    );
  });

  it("ok-moves a placed vm one generation on, keeping what else its record says", () => {
    const rec = create(VmRecordSchema, {
      id: "vm-1",
      nodeId: "n1",
      tenant: "acme",
      generation: 4n,
    });
    const c = placementChange("vm-1", { rec, rev: 17 }, "n2");
    assert.deepEqual(c.compare, { key: "vms/vm-1", modRevision: 17 });
    assert.deepEqual([c.record.nodeId, c.record.tenant, c.record.generation], ["n2", "acme", 5n]);
    assert.equal(rec.generation, 4n, "the record read is not changed");
  });
});
