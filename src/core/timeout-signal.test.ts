import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { timeoutSignal } from "./timeout-signal.js";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** Aborted within `ms`, with collections running meanwhile? */
async function abortsUnderGc(signal: AbortSignal, ms: number): Promise<boolean> {
  const aborted = new Promise<boolean>((resolve) =>
    signal.addEventListener("abort", () => resolve(true), { once: true }),
  );
  const deadline = (async () => {
    for (let i = 0; i < ms / 50; i++) {
      gc();
      await sleep(50);
    }
    return false;
  })();
  return Promise.race([aborted, deadline]);
}

describe("timeoutSignal", () => {
  it("times out combined with other signals, whatever the garbage collector took", async () => {
    const other = new AbortController();
    const signal = timeoutSignal(200, other.signal, undefined);
    assert.equal(await abortsUnderGc(signal, 1500), true);
    assert.equal((signal.reason as Error).name, "TimeoutError");
  });

  it("aborts with the other signal first, with its reason", async () => {
    const other = new AbortController();
    const signal = timeoutSignal(60_000, other.signal);
    other.abort(new Error("closing"));
    assert.equal(signal.aborted, true);
    assert.equal((signal.reason as Error).message, "closing");
  });
});
