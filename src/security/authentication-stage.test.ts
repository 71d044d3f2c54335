import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { RpcError } from "../core/index.js";
import { endWhen } from "./stream-end.js";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

describe("endWhen", () => {
  it("keeps no response of a long stream once it has passed (a relayed disk stays out of memory)", async () => {
    const refs: WeakRef<object>[] = [];
    async function* source() {
      for (let i = 0; i < 500; i++) {
        const chunk = { data: new Uint8Array(64 * 1024) };
        refs.push(new WeakRef(chunk));
        yield chunk;
      }
    }
    const stream = endWhen(
      source(),
      () => undefined,
      () => () => {},
    );
    let n = 0;
    for await (const _ of stream) {
      if (++n === 400) break;
    }
    await new Promise((r) => setImmediate(r));
    gc();
    const alive = refs.slice(0, 390).filter((r) => r.deref() !== undefined).length;
    assert.ok(alive < 10, `${alive} of 390 passed responses still held`);
  });

  it("ends the stream with UNAUTHENTICATED once the certificate is revoked", async () => {
    let revoked = false;
    let listener = () => {};
    async function* source() {
      yield 1;
      await new Promise(() => {});
    }
    const stream = endWhen(
      source(),
      () => (revoked ? new RpcError("UNAUTHENTICATED") : undefined),
      (l) => {
        listener = l;
        return () => {};
      },
    );
    const it = stream[Symbol.asyncIterator]();
    assert.deepEqual(await it.next(), { done: false, value: 1 });
    const pending = it.next();
    revoked = true;
    listener();
    await assert.rejects(pending, /revoked|credential|UNAUTHENTICATED|authenticat/i);
  });
});
