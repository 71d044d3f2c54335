import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { VmInfoSchema } from "../gen/debvisor/v1/vm_pb.js";
import { sameFieldsExcept, sameValue } from "./same-value.js";

describe("sameValue", () => {
  interface Init {
    id?: string;
    memoryBytes?: bigint;
    nodeId?: { id: string };
    labels?: Record<string, string>;
    disks?: { pool: string; name: string }[];
    staleCopyNodes?: string[];
  }
  const init: Init = {
    id: "vm-1",
    memoryBytes: 4n << 30n,
    nodeId: { id: "n1" },
    labels: { app: "web" },
    disks: [{ pool: "tank", name: "vm-1-disk0" }],
    staleCopyNodes: ["n2"],
  };
  const vm = create(VmInfoSchema, init);

  it("calls a message and its decoded copy equal", () => {
    assert.ok(sameValue(vm, fromBinary(VmInfoSchema, toBinary(VmInfoSchema, vm))));
    assert.ok(sameValue({ a: undefined, b: 1 }, { b: 1 }), "undefined is absent");
    assert.ok(sameValue(new Uint8Array([1, 2]), new Uint8Array([1, 2])));
  });

  it("never calls different values equal, however deep the difference", () => {
    const differs = (change: Init) =>
      assert.equal(sameValue(vm, create(VmInfoSchema, { ...init, ...change })), false);
    differs({ memoryBytes: 5n << 30n });
    differs({ nodeId: { id: "n2" } });
    differs({ nodeId: undefined });
    differs({ labels: { app: "db" } });
    differs({ labels: { app: "web", tier: "1" } });
    differs({ disks: [{ pool: "tank", name: "vm-1-disk1" }] });
    differs({ disks: [] });
    differs({ staleCopyNodes: ["n2", "n3"] });
    assert.equal(sameValue(new Uint8Array([1, 2]), new Uint8Array([1, 3])), false);
    assert.equal(sameValue([1, 2], { 0: 1, 1: 2, length: 2 }), false);
    assert.equal(sameValue(Number.NaN, Number.NaN), false, "NaN: different (written again)");
    assert.equal(sameValue(1n, 1), false);
    // Keys named like what every object inherits are fields like any other.
    for (const k of ["constructor", "toString", "valueOf", "hasOwnProperty", "__proto__"])
      assert.equal(sameValue({ labels: {} }, { labels: JSON.parse(`{"${k}":"gpu"}`) }), false, k);
  });

  it("leaves out the fields it is told to", () => {
    const a = { at: 1, load: 0.5, vms: [vm] };
    assert.ok(sameFieldsExcept(a, { at: 2, load: 0.7, vms: [vm] }, new Set(["at", "load"])));
    assert.equal(
      sameFieldsExcept(a, { at: 2, load: 0.5, vms: [] }, new Set(["at", "load"])),
      false,
    );
    assert.ok(sameFieldsExcept(undefined, undefined, new Set()));
    assert.equal(sameFieldsExcept(a, undefined, new Set()), false);
  });
});
