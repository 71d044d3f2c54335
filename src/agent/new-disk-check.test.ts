import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { systemClock, toRpcError } from "../core/index.js";
import {
  canDefine,
  createLocalSimulation,
  createSimulatedStorage,
  type DomainSpec,
} from "../drivers/index.js";
import { DatasetRefSchema, StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import { newDisksChecked } from "./new-disk-check.js";

const GIB = 1024n ** 3n;
const LEFT = { backend: "zfs" as const, pool: "tank", name: "left-behind" };

/** A simulated node whose storage holds `tank/left-behind` (a deleted VM's disk), with a snapshot. */
async function nodeWithLeftover() {
  const dir = mkdtempSync(join(tmpdir(), "dv-new-disk-"));
  const sim = createLocalSimulation({ nodeId: "node-x", dir, vms: 0, now: 0 });
  const dataset = create(DatasetRefSchema, {
    backend: StorageBackend.BACKEND_ZFS,
    pool: LEFT.pool,
    name: LEFT.name,
  });
  const storage = createSimulatedStorage({
    datasets: [{ dataset, nodeId: "node-x", sizeBytes: 11 * 1024 ** 3 }],
    clock: systemClock,
  });
  await storage.createSnapshot(
    { dataset, nodeId: "node-x", name: "payroll" },
    AbortSignal.timeout(5000),
  );
  const driver = newDisksChecked(sim.driver, storage, "node-x");
  assert.ok(canDefine(driver));
  return { sim, driver };
}

const spec = (disk: DomainSpec["disks"][number]): DomainSpec => ({
  id: "thief",
  name: "thief",
  vcpus: 1,
  memoryBytes: GIB,
  disks: [disk],
  ha: false,
  cpuModel: "",
});

describe("a new disk on an agent's node", () => {
  it("is refused with DATASET_EXISTS when the node's storage holds the name, defining nothing", async () => {
    const { sim, driver } = await nodeWithLeftover();
    try {
      assert.ok(canDefine(driver));
      const signal = AbortSignal.timeout(5000);
      const err = await driver.define(spec({ ...LEFT, sizeBytes: GIB }), signal).then(
        () => undefined,
        (e: unknown) => toRpcError(e).reason,
      );
      assert.equal(err, "DATASET_EXISTS");
      assert.deepEqual(
        (await driver.list(signal)).map((d) => d.id),
        [],
        "no domain was defined",
      );
    } finally {
      sim.close();
    }
  });

  it("is made when the name is free, and an existing disk (size 0) is attached as before", async () => {
    const { sim, driver } = await nodeWithLeftover();
    try {
      assert.ok(canDefine(driver));
      const signal = AbortSignal.timeout(5000);
      await driver.define(spec({ ...LEFT, name: "fresh", sizeBytes: GIB }), signal);
      await driver.define(
        { ...spec({ ...LEFT, sizeBytes: 0n }), id: "owner", name: "owner" },
        signal,
      );
      assert.deepEqual((await driver.list(signal)).map((d) => d.id).sort(), ["owner", "thief"]);
    } finally {
      sim.close();
    }
  });
});
