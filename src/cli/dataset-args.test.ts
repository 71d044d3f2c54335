import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import { UsageError } from "./cli-errors.js";
import {
  datasetText,
  parseDataset,
  parseImage,
  parseImageSnapshot,
  parseSnapshot,
} from "./dataset-args.js";

const { BACKEND_ZFS: ZFS, BACKEND_RBD: RBD } = StorageBackend;

describe("parseDataset", () => {
  for (const [text, backend, pool, name, implicit] of [
    ["zfs:tank/vm-001-disk0", ZFS, "tank", "vm-001-disk0", false],
    ["rbd:rbd/vm-001-disk0", RBD, "rbd", "vm-001-disk0", false],
    ["tank/vm-001-disk0", ZFS, "tank", "vm-001-disk0", true],
    ["zfs:tank/vms/vm-001:disk0", ZFS, "tank", "vms/vm-001:disk0", false],
    ["rbd/vm-001-disk0", ZFS, "rbd", "vm-001-disk0", true],
  ] as const)
    it(`ok-${text}`, () => {
      const d = parseDataset("DATASET", text);
      assert.deepEqual(
        [d.ref.backend, d.ref.pool, d.ref.name, d.implicit],
        [backend, pool, name, implicit],
      );
      assert.equal(datasetText(d.ref), implicit ? `zfs:${text}` : text);
    });

  for (const [text, why] of [
    ["tank", /expected POOL\/NAME/],
    ["zfs:tank", /expected POOL\/NAME/],
    ["zfs:tank/", /expected POOL\/NAME/],
    ["ceph:rbd/x", /unknown storage "ceph:"/],
    ["ZFS:tank/x", /unknown storage "ZFS:"/],
    ["zfs:tank/x@snap", /names a snapshot/],
    ["zfs:-tank/x", /not a ZFS pool name/],
    ["zfs:mirror1/x", /not a ZFS pool name/],
    ["zfs:tank/../x", /not a ZFS dataset name/],
    ["zfs:tank//x", /not a ZFS dataset name/],
    ["zfs:tank/a b", /not a ZFS dataset name/],
    ["rbd:rbd/a/b", /not an RBD image name/],
    ["rbd:rbd/-x", /not an RBD image name/],
    [`zfs:tank/${"x".repeat(260)}`, /longer than 255/],
  ] as const)
    it(`fail-${text.slice(0, 30)}`, () =>
      assert.throws(
        () => parseDataset("DATASET", text),
        (e: unknown) => e instanceof UsageError && why.test(e.message),
      ));
});

describe("parseSnapshot", () => {
  it("takes DATASET@NAME and DATASET NAME alike", () => {
    const a = parseSnapshot("SNAPSHOT", "zfs:tank/x@daily-20261122T000000Z");
    const b = parseSnapshot("SNAPSHOT", "zfs:tank/x", "daily-20261122T000000Z");
    assert.deepEqual(a, b);
    assert.equal(a.ref.snapshotName, "daily-20261122T000000Z");
  });
  for (const [text, name, why] of [
    ["zfs:tank/x", undefined, /expected DATASET@NAME/],
    ["zfs:tank/x@", undefined, /expected DATASET@NAME/],
    ["zfs:tank/x@a", "b", /not both/],
    ["zfs:tank/x@-a", undefined, /not a snapshot name/],
    ["zfs:tank/x@a@b", undefined, /not a snapshot name/],
  ] as const)
    it(`fail-${text}${name ? ` ${name}` : ""}`, () =>
      assert.throws(
        () => parseSnapshot("SNAPSHOT", text, name),
        (e: unknown) => e instanceof UsageError && why.test(e.message),
      ));
});

describe("RBD image arguments", () => {
  it("read POOL/IMAGE as RBD, with or without rbd:", () => {
    assert.equal(parseImage("IMAGE", "rbd/vm-1").backend, RBD);
    assert.equal(parseImage("IMAGE", "rbd:rbd/vm-1").name, "vm-1");
    assert.equal(parseImageSnapshot("T", "rbd/vm-1@golden").dataset?.backend, RBD);
  });
  it("refuse a ZFS dataset", () => {
    assert.throws(() => parseImage("IMAGE", "zfs:tank/x"), UsageError);
    assert.throws(() => parseImageSnapshot("T", "zfs:tank/x@s"), UsageError);
  });
});
