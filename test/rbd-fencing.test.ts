import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { RpcError } from "../src/core/index.js";
import { createRbdFencing, parseRbdLockId } from "../src/drivers/index.js";
import { StorageBackend } from "../src/gen/debvisor/v1/storage_pb.js";
import { createReplay, loadTranscript } from "./helpers/recorded-runner.js";

const fixture = new URL("../../test/fixtures/storage/rbd-fencing.txt", import.meta.url);
const image = {
  $typeName: "debvisor.v1.DatasetRef" as const,
  backend: StorageBackend.BACKEND_RBD,
  pool: "rbd",
  name: "vm-7-disk0",
  nodeId: undefined,
};

function fencing(section: string) {
  const replay = createReplay(loadTranscript(fixture, section));
  const f = createRbdFencing({
    runner: replay.runnerFor(undefined),
    globalArgs: ["--id", "debvisor"],
  });
  return { replay, f };
}

describe("createRbdFencing", () => {
  it("ok-take-over: blocklists the image's clients, then moves the lock to the newer generation", async () => {
    const { replay, f } = fencing("take-over");
    const r = await f.takeOver(image, "node-b", 4n, AbortSignal.timeout(5000));
    assert.deepEqual(r.blocklisted, ["192.0.2.4:0/2207394458"]);
    replay.assertDone();
  });

  it("fail-stale: a lock of a newer generation refuses, and nothing is blocklisted or removed", async () => {
    const { replay, f } = fencing("stale");
    await assert.rejects(
      f.takeOver(image, "node-a", 4n, AbortSignal.timeout(5000)),
      (e: RpcError) => e.reason === "STALE_GENERATION",
    );
    replay.assertDone();
  });

  it("fail-raced: a lock added by another node meanwhile is STALE_GENERATION", async () => {
    const { replay, f } = fencing("raced");
    await assert.rejects(
      f.takeOver(image, "node-b", 4n, AbortSignal.timeout(5000)),
      (e: RpcError) => e.reason === "STALE_GENERATION",
    );
    replay.assertDone();
  });

  it("ok-held-already: its own lock at the same generation is kept (the older JSON form parsed)", async () => {
    const { replay, f } = fencing("held-already");
    const r = await f.takeOver(image, "node-b", 4n, AbortSignal.timeout(5000));
    assert.deepEqual(r.blocklisted, []);
    replay.assertDone();
  });

  it("parses only its own lock ids", () => {
    assert.deepEqual(parseRbdLockId("debvisor-g12-node-03"), { generation: 12n, node: "node-03" });
    assert.equal(parseRbdLockId("auto 140245838069376"), undefined);
  });
});
