import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Logger } from "./index.js";
import { createOpenedResources } from "./opened-resources.js";

const recordingLogger = (lines: string[]): Logger => {
  const logger: Logger = {
    debug() {},
    info() {},
    warn() {},
    error: (obj, msg) => lines.push(`${(obj as { resource: string }).resource}: ${msg}`),
    child: () => logger,
  };
  return logger;
};

describe("createOpenedResources", () => {
  it("closes newest first, each once, waiting for asynchronous closers", async () => {
    const closed: string[] = [];
    const resources = createOpenedResources(recordingLogger([]));
    resources.push("lock", () => closed.push("lock"));
    resources.push("store", async () => {
      await new Promise((r) => setTimeout(r, 10));
      closed.push("store");
    });
    resources.push("server", () => closed.push("server"));
    await Promise.all([resources.unwind(), resources.unwind()]);
    await resources.unwind();
    assert.deepEqual(closed, ["server", "store", "lock"]);
  });

  it("logs a closer that fails and still closes the rest", async () => {
    const closed: string[] = [];
    const errors: string[] = [];
    const resources = createOpenedResources(recordingLogger(errors));
    resources.push("lock", () => closed.push("lock"));
    resources.push("store", () => Promise.reject(new Error("disk gone")));
    resources.push("server", () => {
      throw new Error("already closed");
    });
    await resources.unwind();
    assert.deepEqual(closed, ["lock"]);
    assert.deepEqual(errors, [
      "server: closing failed; closing the rest",
      "store: closing failed; closing the rest",
    ]);
  });

  it("refuses to take a resource once unwinding began", async () => {
    const resources = createOpenedResources(recordingLogger([]));
    await resources.unwind();
    assert.throws(() => resources.push("late", () => {}), TypeError);
  });
});
