import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { silentLogger } from "../src/core/index.js";
import { createSqliteStore } from "../src/store/index.js";

const WRITER = fileURLToPath(new URL("./helpers/store-writer.js", import.meta.url));
const RUNS = 25;

/** Starts the writer, kills it with SIGKILL after `afterMs` of writing, returns the keys it acknowledged. */
function writeThenKill(path: string, run: number, afterMs: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WRITER, path, String(run)], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    let timer: NodeJS.Timeout | undefined;
    const guard = setTimeout(() => child.kill("SIGKILL"), 20_000);
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      if (timer === undefined && out.startsWith("ready\n"))
        timer = setTimeout(() => child.kill("SIGKILL"), afterMs);
    });
    child.stderr.on("data", (d: Buffer) => {
      err += d.toString();
    });
    child.once("exit", (_code, signal) => {
      clearTimeout(guard);
      if (timer !== undefined) clearTimeout(timer);
      if (signal !== "SIGKILL")
        return reject(new Error(`writer ended without being killed: ${err}`));
      // A line without its newline was cut mid-write: not an acknowledgement we can count.
      const lines = out.split("\n");
      lines.pop();
      resolve(lines.filter((l) => l.startsWith("crash/")));
    });
  });
}

describe("SQLite store under kill -9", () => {
  it(`keeps every acknowledged write across ${RUNS} SIGKILLs at random moments`, async (t) => {
    const path = join(mkdtempSync(join(tmpdir(), "dv-crash-")), "state.db");
    const acknowledged: string[] = [];
    for (let run = 0; run < RUNS; run++) {
      acknowledged.push(...(await writeThenKill(path, run, 30 + Math.floor(Math.random() * 250))));
    }
    assert.ok(
      acknowledged.length > RUNS * 10,
      `the writer got going (${acknowledged.length} acknowledged writes)`,
    );

    const db = new Database(path, { readonly: true });
    assert.equal(db.pragma("integrity_check", { simple: true }), "ok");
    db.close();

    const store = createSqliteStore({ path, logger: silentLogger });
    const missing: string[] = [];
    for (const key of acknowledged) if ((await store.get(key)) === undefined) missing.push(key);
    await store.close();
    t.diagnostic(
      `${RUNS} kills, ${acknowledged.length} acknowledged writes, ${missing.length} missing`,
    );
    assert.deepEqual(missing, []);
  });
});
