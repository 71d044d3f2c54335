import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { eventually } from "../../test/helpers/eventually.js";
import { silentLogger } from "../core/index.js";
import { createSqliteStore } from "../store/index.js";
import { followLiveServingSerials } from "./live-serving-serials.js";
import { registerRunner } from "./runner-registry.js";

const PATIENCE = { timeoutMs: 20_000, intervalMs: 20 };

describe("the serials live daemons serve, from their runner keys", () => {
  const dir = mkdtempSync(join(tmpdir(), "dv-live-serials-"));
  const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("follows each runner's published serial, ignores values it cannot read, and forgets a stopped runner's", async () => {
    const put = (key: string, value: string) =>
      store.put(`runners/${key}`, new TextEncoder().encode(value));
    // An older daemon's bare id, and values of versions this one does not know.
    await put("host:1", "host:1");
    await put("r-old00001", "r-old00001");
    await put("r-other001", JSON.stringify({ id: "r-other001", serving: 42 }));
    await put("r-other002", JSON.stringify({ id: "r-other002", serving: "NOT HEX" }));
    await put("r-other003", "null");
    let serving: string | undefined = "abc1";
    const runner = await registerRunner(
      store,
      "r-serving1",
      3000,
      silentLogger,
      undefined,
      () => serving,
    );
    const live = await followLiveServingSerials(store, silentLogger);
    let changes = 0;
    live.onChange(() => changes++);
    try {
      assert.deepEqual([...live.serials()], [["abc1", "r-serving1"]]);
      serving = "f00d";
      runner.publishServing();
      await eventually(
        () => assert.deepEqual([...live.serials()], [["f00d", "r-serving1"]]),
        PATIENCE,
      );
      assert.equal(changes, 1);
      await runner.close();
      await eventually(() => assert.equal(live.serials().size, 0), PATIENCE);
      assert.equal(changes, 2);
    } finally {
      live.close();
      await runner.close();
    }
  });
});
