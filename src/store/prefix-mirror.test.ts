import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { silentLogger } from "../core/index.js";
import { mirrorPrefix } from "./prefix-mirror.js";
import { createSqliteStore } from "./sqlite-store.js";

describe("mirrorPrefix", () => {
  it("follows changes, and a removed listener is gone for good", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-mirror-")), "s.db"),
      logger: silentLogger,
    });
    await store.put("m/a", new Uint8Array([1]));
    const mirror = await mirrorPrefix(store, "m/", (kv) => kv.value[0], silentLogger);
    assert.deepEqual([...mirror.values()], [["a", 1]]);
    let calls = 0;
    const stop = mirror.onChange(() => calls++);
    await store.put("m/b", new Uint8Array([2]));
    for (let i = 0; i < 50 && calls === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(calls, 1);
    assert.equal(mirror.values().get("b"), 2);
    stop();
    await store.put("m/c", new Uint8Array([3]));
    for (let i = 0; i < 50 && !mirror.values().has("c"); i++)
      await new Promise((r) => setTimeout(r, 10));
    assert.equal(mirror.values().get("c"), 3);
    assert.equal(calls, 1, "not called after unsubscribing");
    mirror.close();
    await store.close();
  });
});
