import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RpcError } from "../core/index.js";
import { createSendQueue } from "./send-queue.js";

describe("createSendQueue", () => {
  it("delivers in order and ends after what is queued when closed", async () => {
    const q = createSendQueue<number>(4);
    q.push(1);
    q.push(2);
    q.close();
    assert.equal(q.push(3), false, "closed: refused");
    const seen: number[] = [];
    for await (const n of q) seen.push(n);
    assert.deepEqual(seen, [1, 2]);
  });

  it("wakes a waiting reader when an item arrives", async () => {
    const q = createSendQueue<string>(4);
    const first = q[Symbol.asyncIterator]().next();
    setTimeout(() => q.push("hello"), 10);
    assert.deepEqual(await first, { value: "hello", done: false });
  });

  it("closes with STREAM_STALLED and drops what it held when pushed past its bound", async () => {
    const q = createSendQueue<number>(2);
    assert.equal(q.push(1), true);
    assert.equal(q.push(2), true);
    assert.equal(q.push(3), false);
    assert.equal(q.closed, true);
    assert.equal(q.size, 0, "nothing kept for a reader that does not read");
    await assert.rejects(
      (async () => {
        for await (const _ of q) {
          // nothing is delivered
        }
      })(),
      (err: unknown) => err instanceof RpcError && err.reason === "STREAM_STALLED",
    );
  });
});
