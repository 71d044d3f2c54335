import assert from "node:assert/strict";
import { Readable } from "node:stream";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createManualClock, RpcError } from "../core/index.js";
import { DatasetRefSchema, StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import { createSimulatedStorage } from "./simulated-storage.js";

const DISK = create(DatasetRefSchema, {
  backend: StorageBackend.BACKEND_ZFS,
  pool: "tank",
  name: "vm-1-disk0",
});
const MIB = 1024 * 1024;
const signal = new AbortController().signal;
const names = async (sim: ReturnType<typeof world>, node: string) =>
  (await sim.listSnapshots(DISK, signal, node))?.map((s) => s.ref?.snapshotName);

function world() {
  const clock = createManualClock(Date.parse("2026-11-22T14:00:00Z"));
  const sim = createSimulatedStorage({
    clock,
    datasets: [{ dataset: DISK, nodeId: "node-a", sizeBytes: 2 * MIB }],
  });
  return Object.assign(sim, { clock });
}

/** Sends `snapshot` from node-a into node-b through the two halves; `cut` drops the stream's tail. */
async function send(sim: ReturnType<typeof world>, snapshot: string, base?: string, cut = 0) {
  const out = await sim.openSendStream({ dataset: DISK, nodeId: "node-a", snapshot, base, signal });
  let stream: Readable = out.stream;
  if (cut > 0) {
    const chunks: Buffer[] = [];
    for await (const c of out.stream) chunks.push(c as Buffer);
    const all = Buffer.concat(chunks);
    stream = Readable.from([all.subarray(0, all.length - cut)]);
  }
  return sim.receiveStream({ dataset: DISK, nodeId: "node-b", base, stream, signal });
}

describe("simulated storage, send split in two halves", () => {
  it("moves the dataset in a full stream, then only the changes incrementally", async () => {
    const sim = world();
    await sim.createSnapshot({ dataset: DISK, name: "s1", nodeId: "node-a" }, signal);
    const full = await send(sim, "s1");
    assert.ok(full.bytes >= 2 * MIB && full.bytes < 2 * MIB + 4096, String(full.bytes));
    sim.clock.advance(3_600_000);
    await sim.createSnapshot({ dataset: DISK, name: "s2", nodeId: "node-a" }, signal);
    const incremental = await send(sim, "s2", "s1");
    assert.ok(incremental.bytes < full.bytes);
    assert.deepEqual(await names(sim, "node-b"), ["s1", "s2"]);
  });

  it("fail-truncated: a stream cut short changes nothing on the target", async () => {
    const sim = world();
    await sim.createSnapshot({ dataset: DISK, name: "s1", nodeId: "node-a" }, signal);
    await assert.rejects(
      send(sim, "s1", undefined, 100),
      (e: unknown) => e instanceof RpcError && e.reason === "STORAGE_UNAVAILABLE",
    );
    assert.equal(await names(sim, "node-b"), undefined);
  });

  it("fail-diverged: an incremental stream onto a copy that does not end at its base is refused", async () => {
    const sim = world();
    await sim.createSnapshot({ dataset: DISK, name: "s1", nodeId: "node-a" }, signal);
    await send(sim, "s1");
    await sim.createSnapshot({ dataset: DISK, name: "s2", nodeId: "node-a" }, signal);
    await sim.createSnapshot({ dataset: DISK, name: "s3", nodeId: "node-a" }, signal);
    await assert.rejects(
      send(sim, "s3", "s2"),
      (e: unknown) => e instanceof RpcError && e.reason === "REPLICATION_DIVERGED",
    );
    assert.deepEqual(await names(sim, "node-b"), ["s1"]);
  });
});
