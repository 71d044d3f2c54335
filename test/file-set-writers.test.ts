// Two processes replacing one set of files at once: two daemons renewing
// the server certificate files they share, both due when they start (a
// cluster back from an outage). Each writer's copies went to the same
// `.next` names and were moved in one by one, so the set could end as one
// writer's key beside the other's certificate, which no daemon loads (the
// running one keeps its old certificate to its end; a restart fails).
// Found by an adversarial review of the pki.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";

// The module itself, not the client's index: each child loads in a third of the time.
const FILE_SET = fileURLToPath(new URL("../src/client/file-set.js", import.meta.url));

/** A process that writes key and certificate `tag` as one set in `dir` at `startMs`; resolves on its exit code. */
function writer(dir: string, tag: string, startMs: number): Promise<number | null> {
  const script = `
    const { writeFileSet } = await import(${JSON.stringify(FILE_SET)});
    // Asleep until just before the start, then a spin to meet it to the millisecond.
    await new Promise((r) => setTimeout(r, ${startMs} - Date.now() - 20));
    while (Date.now() < ${startMs});
    await writeFileSet([
      { path: ${JSON.stringify(join(dir, "server.key"))}, text: ${JSON.stringify(tag)}, mode: 0o600 },
      { path: ${JSON.stringify(join(dir, "server.crt"))}, text: ${JSON.stringify(tag)}, mode: 0o644 },
    ]);`;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  return new Promise((resolve) => child.once("exit", resolve));
}

describe("one set of files written by two processes at once", () => {
  const dir = mkdtempSync(join(tmpdir(), "dv-file-set-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("ends as one writer's set, whole", async () => {
    const mixed: string[] = [];
    for (let round = 0; round < 30; round++) {
      // Both start at the same moment, once both have loaded (well past their start-up).
      const start = Date.now() + 400;
      const codes = await Promise.all([
        writer(dir, `a${round}`, start),
        writer(dir, `b${round}`, start),
      ]);
      assert.deepEqual(codes, [0, 0], `round ${round}: both writers succeed`);
      const key = readFileSync(join(dir, "server.key"), "utf8");
      const cert = readFileSync(join(dir, "server.crt"), "utf8");
      if (key !== cert) mixed.push(`round ${round}: key ${key}, certificate ${cert}`);
    }
    assert.deepEqual(mixed, [], "a key beside another writer's certificate");
  });
});
