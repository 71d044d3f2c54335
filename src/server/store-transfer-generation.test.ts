import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { firstGeneration, generationFloor } from "../cluster/index.js";
import { silentLogger } from "../core/index.js";
import { openSimulatedDiskLocks } from "../drivers/index.js";
import { createSqliteStore } from "../store/index.js";
import { exportStore, importStore } from "./store-transfer.js";

/**
 * A VM's first generation is above every generation its id ever had
 * (firstGeneration), read from the store's revision. A store imported from
 * another starts its revisions again from 1, while the shared storage keeps
 * the disks' locks of the VMs deleted before the move, freed above their
 * last generation: without a floor, a VM created again under such an id
 * after the move took a generation below it, and its start was refused
 * STALE_GENERATION until the new store's revision caught up.
 */
describe("a store moved with store export / import", () => {
  it("keeps VMs created after the move above the generations of the disks' locks", async () => {
    const root = mkdtempSync(join(tmpdir(), "dv-floor-"));
    const a = createSqliteStore({ path: join(root, "a.db"), logger: silentLogger });
    const locks = openSimulatedDiskLocks(join(root, "shared-storage"));
    try {
      // Some history: the source store's revision is well past the new one's.
      for (let i = 0; i < 300; i++) await a.put(`nodes/n-${i % 5}`, new Uint8Array([i % 256]));
      // vm-1 created (its disk's lock taken under its first generation), then deleted:
      // the lock is freed above that generation.
      const old = firstGeneration(await generationFloor(a));
      await a.put("vms/vm-1", new TextEncoder().encode(`generation ${old}`));
      locks.acquire(["pool/vm-1-root"], "node-a", old, () => {});
      locks.release(["pool/vm-1-root"], "node-a", old + 1n);
      await a.delete("vms/vm-1");
      const lines: string[] = [];
      await exportStore(a, (line) => {
        lines.push(line.trimEnd());
      });
      const b = createSqliteStore({ path: join(root, "b.db"), logger: silentLogger });
      try {
        await importStore(
          b,
          (async function* () {
            yield* lines;
          })(),
        );
        // vm-1 created again on the new store: its start takes the freed lock.
        const again = firstGeneration(await generationFloor(b));
        await b.put("vms/vm-1", new TextEncoder().encode(`generation ${again}`));
        assert.ok(again > old + 1n, `generation ${again} above the deleted vm's ${old + 1n}`);
        locks.acquire(["pool/vm-1-root"], "node-b", again, () => {});
        assert.deepEqual(locks.lock("pool/vm-1-root"), {
          disk: "pool/vm-1-root",
          owner: "node-b",
          generation: again,
        });
        // Moved once more: the floor goes with it.
        const more: string[] = [];
        await exportStore(b, (line) => {
          more.push(line.trimEnd());
        });
        const c = createSqliteStore({ path: join(root, "c.db"), logger: silentLogger });
        try {
          await importStore(
            c,
            (async function* () {
              yield* more;
            })(),
          );
          assert.ok(firstGeneration(await generationFloor(c)) > again);
        } finally {
          await c.close();
        }
      } finally {
        await b.close();
      }
    } finally {
      locks.close();
      await a.close();
    }
  });
});
