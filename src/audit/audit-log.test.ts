import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it, type TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import { runsAsRoot } from "../../test/helpers/required-tools.js";
import { createManualClock, silentLogger } from "../core/index.js";
import { ROTATION_RETRY_MS } from "./audit-files.js";
import { AUDIT_CLOSE_TIMEOUT_MS, openAuditLog } from "./audit-log.js";
import { type AuditFields, type AuditRecord, chainHash, recordLine } from "./audit-record.js";
import { verifyAuditFiles } from "./audit-verify.js";

const fields = (i: number): AuditFields => ({
  event: "rpc",
  requestId: `r-${i}`,
  principal: "p",
  authMethod: "mtls",
  keyId: "",
  tenant: "",
  peer: "127.0.0.1:1",
  service: "s",
  method: "M",
  permission: "node:list",
  decision: "allow",
  reason: "role x",
  args: "{}",
  code: "OK",
  error: "",
  durationMs: 1,
});
const dir = () => mkdtempSync(join(tmpdir(), "dv-audit-"));
const lines = (p: string) =>
  readFileSync(p, "utf8")
    .split("\n")
    .filter((l) => l !== "");

/**
 * A tmpfs of 16 inodes, unmounted when the test ends; undefined (the test
 * skipped) when not root. With its inodes used up (useUpInodes), renaming in
 * it still works and creating a file fails with ENOSPC.
 */
function smallTmpfs(t: TestContext): string | undefined {
  if (!runsAsRoot(t, "to mount a tmpfs")) return undefined;
  const dir = mkdtempSync(join(tmpdir(), "dv-audit-inodes-"));
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=4m,nr_inodes=16", "tmpfs", dir]);
  t.after(() => execFileSync("umount", ["-l", dir]));
  return dir;
}

/** Uses up every free inode of `dir`'s file system with empty files; returns them. */
function useUpInodes(dir: string): string[] {
  const made: string[] = [];
  for (let i = 0; i < 64; i++) {
    const f = join(dir, `filler-${i}`);
    try {
      writeFileSync(f, "");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOSPC") return made;
      throw err;
    }
    made.push(f);
  }
  throw new Error("the tmpfs never ran out of inodes");
}

/**
 * Opens a trail rotating past 1 KiB, appends 6 records while `full` has no
 * free inode (calling `whileFull` then), and 6 more once it has, past the
 * retry delay; every append must succeed. Closes the trail.
 */
async function appendThroughInodeShortage(
  full: string,
  files: { path: string; copyPath?: string },
  whileFull: () => void,
): Promise<void> {
  const clock = createManualClock(Date.UTC(2026, 11, 5));
  const log = await openAuditLog({
    ...files,
    maxBytes: 1024,
    clock,
    logger: silentLogger,
    alarm: () => {},
  });
  try {
    const fillers = useUpInodes(full);
    // Past 1 KiB a rotation renames the files (that works), then cannot create a next one.
    for (let i = 0; i < 6; i++) await log.append(fields(i));
    whileFull();
    for (const f of fillers) rmSync(f);
    clock.advance(ROTATION_RETRY_MS);
    for (let i = 6; i < 12; i++) await log.append(fields(i));
  } finally {
    await log.close();
  }
}

const rotatedFiles = (d: string, base: string) =>
  readdirSync(d)
    .filter((f) => f.startsWith(`${base}.`))
    .sort();

/** Three records in the trail at `path` and its copy, closed. */
async function threeRecords(path: string, copyPath: string): Promise<void> {
  const log = await openAuditLog({ path, copyPath, logger: silentLogger });
  for (let i = 0; i < 3; i++) await log.append(fields(i));
  await log.close();
}

/** A trail with a copy in another directory, `n` records appended to it, closed. */
async function trailWithCopy(n: number): Promise<{ path: string; copyPath: string }> {
  const d = dir();
  const path = join(d, "audit.log");
  const copyPath = join(d, "other-disk", "audit-copy.log");
  mkdirSync(join(d, "other-disk"));
  const log = await openAuditLog({ path, copyPath, logger: silentLogger });
  for (let i = 0; i < n; i++) await log.append(fields(i));
  await log.close();
  return { path, copyPath };
}

/**
 * Rotates the trail at `path` (and its copy) in a child process that runs
 * `afterRename` (JS) once both files are renamed and `failed` (JS) if the
 * rotation fails; answers the signal that ended the child.
 */
async function rotateInChild(
  path: string,
  copyPath: string,
  step: { afterRename: string; failed: string },
): Promise<NodeJS.Signals | null> {
  const files = fileURLToPath(new URL("./audit-files.js", import.meta.url));
  const core = fileURLToPath(new URL("../core/index.js", import.meta.url));
  const script = `
      import { execFileSync } from "node:child_process";
      const { openAuditFiles } = await import(${JSON.stringify(files)});
      const { silentLogger, systemClock } = await import(${JSON.stringify(core)});
      const files = await openAuditFiles({
        path: ${JSON.stringify(path)}, copyPath: ${JSON.stringify(copyPath)},
        size: ${statSync(path).size}, maxBytes: 1, maxAgeMs: 86400000,
        clock: systemClock, log: silentLogger,
        afterRename: () => { ${step.afterRename}; },
      });
      await files.rotateIfDue().catch(() => { ${step.failed}; });`;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    stdio: "inherit",
  });
  return new Promise((resolve) => child.once("exit", (_, sig) => resolve(sig)));
}

describe("audit log", () => {
  it("makes every record durable and shares fsyncs between records queued together", async () => {
    const path = join(dir(), "audit.log");
    const log = await openAuditLog({ path, logger: silentLogger });
    await Promise.all(Array.from({ length: 500 }, (_, i) => log.append(fields(i))));
    const { records, syncs } = log.stats();
    await log.close();
    assert.equal(records, 501, "500 plus the start record");
    assert.ok(syncs < records / 10, `group commit: ${records} records in ${syncs} fsyncs`);
    assert.equal(lines(path).length, 501);
    assert.deepEqual(verifyAuditFiles([path]), { ok: true, files: 1, records: 501 });
  });

  it("continues the chain across restarts", async () => {
    const path = join(dir(), "audit.log");
    for (let run = 0; run < 3; run++) {
      const log = await openAuditLog({ path, logger: silentLogger });
      await log.append(fields(run));
      await log.close();
    }
    assert.equal(verifyAuditFiles([path]).records, 6);
  });

  for (const [name, tamper, what] of [
    [
      "an edited record",
      (ls: string[]) => {
        ls[3] = (ls[3] as string).replace('"principal":"p"', '"principal":"q"');
      },
      /record 4 was edited/,
    ],
    [
      "a deleted record",
      (ls: string[]) => {
        ls.splice(3, 1);
      },
      /before 5 are missing/,
    ],
    [
      "swapped records",
      (ls: string[]) => {
        [ls[3], ls[4]] = [ls[4] as string, ls[3] as string];
      },
      /record 5 /,
    ],
  ] as const) {
    it(`detects ${name}`, async () => {
      const path = join(dir(), "audit.log");
      const log = await openAuditLog({ path, logger: silentLogger });
      for (let i = 0; i < 8; i++) await log.append(fields(i));
      await log.close();
      const ls = lines(path);
      tamper(ls);
      writeFileSync(path, `${ls.join("\n")}\n`);
      const r = verifyAuditFiles([path]);
      assert.equal(r.ok, false);
      assert.match(r.problem?.what ?? "", what);
      assert.equal(r.problem?.line, 4);
    });
  }

  it("with an HMAC key, a chain rebuilt without the key does not verify", async () => {
    const key = Buffer.alloc(32, 7);
    const path = join(dir(), "audit.log");
    const log = await openAuditLog({ path, hmacKey: key, logger: silentLogger });
    for (let i = 0; i < 3; i++) await log.append(fields(i));
    await log.close();
    assert.equal(verifyAuditFiles([path], key).ok, true);
    // An attacker edits record 2 and rebuilds every hash after it with plain SHA-256.
    const recs = lines(path).map((l) => JSON.parse(l));
    recs[1].principal = "someone-else";
    let prev = recs[0].hash;
    const forged = recs.map((r: Record<string, unknown>, i: number) => {
      if (i === 0) return recordLine(r as never);
      const { hash: _h, ...rest } = r;
      const next = { ...rest, prev } as never;
      const hash = chainHash(next, undefined);
      prev = hash;
      return recordLine({ ...(next as object), hash } as never);
    });
    writeFileSync(path, forged.join(""));
    assert.equal(verifyAuditFiles([path], key).ok, false);
  });

  it("moves a torn last line aside and continues the chain with a recovery record", async () => {
    const d = dir();
    const path = join(d, "audit.log");
    const log = await openAuditLog({ path, logger: silentLogger });
    await log.append(fields(1));
    await log.close();
    appendFileSync(path, '{"ts":"2026-01-01T00:00:00Z","seq":3,"event":"rp');
    const again = await openAuditLog({ path, logger: silentLogger });
    await again.append(fields(2));
    await again.close();
    const recs = lines(path).map((l) => JSON.parse(l) as { event: string; reason: string });
    assert.equal(recs[2]?.event, "audit.recovered");
    assert.match(
      recs[2]?.reason ?? "",
      /torn last line \(\d+ bytes\) moved to .*audit\.log\.torn-/,
    );
    assert.equal(verifyAuditFiles([path]).ok, true);
    assert.equal(readdirSync(d).filter((f) => f.includes(".torn-")).length, 1);
  });

  for (const [name, torn] of [
    // A power loss after a large group of records (past 1 MiB): the file's
    // new size survived, its data did not (blocks read back as zeros).
    ["a torn tail longer than 1 MiB", Buffer.alloc(2 * 1024 * 1024)],
    // Zeros over the start of two lines of a group whose ends made it.
    [
      "two torn lines",
      Buffer.concat([
        Buffer.alloc(300),
        Buffer.from('","seq":4}\n'),
        Buffer.alloc(300),
        Buffer.from('"}\n'),
      ]),
    ],
  ] as const)
    it(`moves ${name} aside and continues the chain, never starting it again`, async () => {
      const d = dir();
      const path = join(d, "audit.log");
      const log = await openAuditLog({ path, logger: silentLogger });
      for (let i = 0; i < 2; i++) await log.append(fields(i));
      await log.close();
      appendFileSync(path, torn);
      const again = await openAuditLog({ path, logger: silentLogger });
      await again.append(fields(2));
      await again.close();
      const v = verifyAuditFiles([path]);
      assert.deepEqual(v, { ok: true, files: 1, records: 5 }, JSON.stringify(v.problem));
      const recs = lines(path).map((l) => JSON.parse(l) as { seq: number; event: string });
      assert.deepEqual(
        recs.map((r) => r.seq),
        [1, 2, 3, 4, 5],
      );
      assert.equal(recs[3]?.event, "audit.recovered");
      const moved = readdirSync(d).filter((f) => f.includes(".torn-"));
      assert.equal(moved.length, 1);
      assert.equal(
        statSync(join(d, moved[0] as string)).size,
        torn.length,
        "all of the torn tail, kept",
      );
    });

  for (const [name, tear, tornLines] of [
    // ext4 data=writeback: the size and the last page made it, a page before it did not (zeros).
    ["zeros over a line", (ls: Buffer[]) => [ls[6]?.subarray(0, -1)], 3],
    // Zeros over the end of one line and the start of the next, newline and all: one torn line.
    ["zeros across two lines", (ls: Buffer[]) => [ls[6]?.subarray(-40), ls[7]?.subarray(0, 40)], 2],
  ] as const)
    it(`moves a group torn in its middle (${name}) aside with its later records, so the trail verifies`, async () => {
      const d = dir();
      const path = join(d, "audit.log");
      const log = await openAuditLog({ path, logger: silentLogger });
      for (let i = 0; i < 8; i++) await log.append(fields(i));
      await log.close();
      // The power loss: lines 7 to 9 (seq 7 to 9) were the last, unsynced group.
      const ls = lines(path).map((l) => Buffer.from(`${l}\n`));
      for (const part of tear(ls)) part?.fill(0);
      writeFileSync(path, Buffer.concat(ls));
      const again = await openAuditLog({ path, logger: silentLogger });
      await again.append(fields(9));
      await again.close();
      const v = verifyAuditFiles([path]);
      assert.deepEqual(v, { ok: true, files: 1, records: 8 }, JSON.stringify(v.problem));
      const recs = lines(path).map((l) => JSON.parse(l) as AuditRecord);
      assert.deepEqual(
        recs.map((r) => r.seq),
        [1, 2, 3, 4, 5, 6, 7, 8],
        "the chain goes on from the last good record",
      );
      assert.equal(recs[6]?.event, "audit.recovered");
      assert.match(
        recs[6]?.reason ?? "",
        new RegExp(
          `${tornLines} line\\(s\\) \\(\\d+ bytes\\) after record 6 moved to .*audit\\.log\\.torn-`,
        ),
      );
      const moved = readdirSync(d).filter((f) => f.includes(".torn-"));
      assert.equal(moved.length, 1);
      assert.deepEqual(
        readFileSync(join(d, moved[0] as string)),
        Buffer.concat(ls.slice(6)),
        "the torn line and every line after it, kept",
      );
    });

  it("moves a line of another chain (stale data) in the last group aside with the records after it", async () => {
    const d = dir();
    const path = join(d, "audit.log");
    const log = await openAuditLog({ path, logger: silentLogger });
    for (let i = 0; i < 8; i++) await log.append(fields(i));
    await log.close();
    const other = join(d, "other.log");
    const stale = await openAuditLog({ path: other, logger: silentLogger });
    await stale.append(fields(99));
    await stale.close();
    const ls = lines(path);
    ls[6] = lines(other)[1] as string; // parses, but its prev is no record's here
    writeFileSync(path, `${ls.join("\n")}\n`);
    const again = await openAuditLog({ path, logger: silentLogger });
    await again.append(fields(9));
    await again.close();
    const v = verifyAuditFiles([path]);
    assert.deepEqual(v, { ok: true, files: 1, records: 8 }, JSON.stringify(v.problem));
  });

  it("leaves a broken line further back than any unsynced group can reach where it is", async () => {
    const d = dir();
    const path = join(d, "audit.log");
    const log = await openAuditLog({ path, logger: silentLogger });
    // Past 1 MiB of records after the broken one: acknowledged long ago, not a torn group.
    await Promise.all(Array.from({ length: 3000 }, (_, i) => log.append(fields(i))));
    await log.close();
    assert.ok(statSync(path).size > 1.2 * 1024 * 1024);
    const ls = lines(path);
    ls[2] = "x".repeat((ls[2] as string).length);
    writeFileSync(path, `${ls.join("\n")}\n`);
    const again = await openAuditLog({ path, logger: silentLogger });
    await again.close();
    assert.deepEqual(
      readdirSync(d).filter((f) => f.includes(".torn-")),
      [],
      "nothing moved aside",
    );
    assert.equal(lines(path).length, 3002, "every record kept, the start record after them");
    assert.equal(verifyAuditFiles([path]).problem?.line, 3);
  });

  it("refuses a copy that is the trail's own file under another name", async () => {
    const d = dir();
    const path = join(d, "audit.log");
    symlinkSync(d, join(d, "copy-disk"));
    for (const copyPath of [path, join(d, "copy-disk", "audit.log")]) {
      // Every record went in twice (the chain broken from record 1) and no rotation ever succeeded.
      await assert.rejects(
        openAuditLog({ path, copyPath, logger: silentLogger }),
        /audit copy .* is the audit file itself/,
      );
      assert.deepEqual(lines(path), [], "nothing written");
    }
  });

  it("keeps a second copy in step, so deleting the newest records from one copy shows", async () => {
    const d = dir();
    const path = join(d, "audit.log");
    const copyPath = join(d, "other-disk", "audit-copy.log");
    mkdirSync(join(d, "other-disk"));
    const log = await openAuditLog({ path, copyPath, logger: silentLogger });
    await Promise.all(Array.from({ length: 50 }, (_, i) => log.append(fields(i))));
    await log.close();
    assert.equal(readFileSync(copyPath, "utf8"), readFileSync(path, "utf8"));
    // An intruder drops the last 5 records from the main file: it still verifies alone...
    writeFileSync(path, `${lines(path).slice(0, -5).join("\n")}\n`);
    const main = verifyAuditFiles([path]);
    assert.equal(main.ok, true);
    // ...but not against the copy.
    assert.equal(verifyAuditFiles([copyPath]).records - main.records, 5);
  });

  it("forwards every durable record to syslog through logger(1)", async () => {
    const d = dir();
    const bin = join(d, "bin");
    mkdirSync(bin);
    const received = join(d, "syslog.out");
    writeFileSync(join(bin, "logger"), `#!/bin/sh\ncat >> ${received}\n`, { mode: 0o755 });
    const savedPath = process.env.PATH;
    process.env.PATH = `${bin}:${savedPath}`;
    try {
      const path = join(d, "audit.log");
      const log = await openAuditLog({ path, forwardToSyslog: true, logger: silentLogger });
      for (let i = 0; i < 5; i++) await log.append(fields(i));
      await log.close();
      let got = "";
      // Bounded at ~20 s: logger(1) runs as a child process, slow to start on a loaded machine.
      for (let i = 0; i < 200 && got.split("\n").length < 7; i++) {
        await new Promise((r) => setTimeout(r, 100));
        got = existsSync(received) ? readFileSync(received, "utf8") : "";
      }
      assert.equal(got, readFileSync(path, "utf8"));
    } finally {
      process.env.PATH = savedPath;
    }
  });

  it("rotates twice in one millisecond without renaming one file over the other", async () => {
    const d = dir();
    const path = join(d, "audit.log");
    // The clock stands still: every rotation has the same time stamp.
    const log = await openAuditLog({
      path,
      maxBytes: 1024,
      clock: createManualClock(Date.UTC(2026, 11, 5)),
      logger: silentLogger,
    });
    for (let i = 0; i < 30; i++) await log.append(fields(i));
    await log.close();
    const rotated = readdirSync(d)
      .filter((f) => f.startsWith("audit.log."))
      .sort()
      .map((f) => join(d, f));
    assert.ok(rotated.length >= 3, `rotated ${rotated.length} times`);
    const all = [...rotated, path];
    assert.deepEqual(verifyAuditFiles(all), { ok: true, files: all.length, records: 31 });
  });

  it("rotates by size and keeps the chain across files", async () => {
    const d = dir();
    const path = join(d, "audit.log");
    const log = await openAuditLog({ path, maxBytes: 2048, logger: silentLogger });
    for (let i = 0; i < 40; i++) await log.append(fields(i));
    await log.close();
    const rotated = readdirSync(d)
      .filter((f) => f.startsWith("audit.log."))
      .sort()
      .map((f) => join(d, f));
    assert.ok(rotated.length >= 2);
    const all = [...rotated, path];
    assert.deepEqual(verifyAuditFiles(all), { ok: true, files: all.length, records: 41 });
    assert.equal(
      verifyAuditFiles(all.slice(1)).ok,
      true,
      "a later file verifies on its own from its first record",
    );
    assert.ok(existsSync(path));
  });

  it("writes on in a correctly named file when a rotation cannot create the next file, and rotates once it can", async (t) => {
    const d = smallTmpfs(t);
    if (d === undefined) return;
    const path = join(d, "audit.log");
    await appendThroughInodeShortage(d, { path }, () => {
      assert.deepEqual(rotatedFiles(d, "audit.log"), [], "the rename was undone");
      assert.equal(lines(path).length, 7, "every record in the file of that name");
    });
    const rotated = rotatedFiles(d, "audit.log");
    assert.ok(rotated.length >= 2, `rotated ${rotated.length} times once files could be created`);
    const all = [...rotated.map((f) => join(d, f)), path];
    assert.deepEqual(verifyAuditFiles(all), { ok: true, files: all.length, records: 13 });
  });

  it("rotates the copy at the same record as the main file, also when the copy's next file cannot be created", async (t) => {
    const other = smallTmpfs(t);
    if (other === undefined) return;
    const d = dir();
    const path = join(d, "audit.log");
    const copyPath = join(other, "audit-copy.log");
    await appendThroughInodeShortage(other, { path, copyPath }, () => {});
    const mains = rotatedFiles(d, "audit.log");
    const copies = rotatedFiles(other, "audit-copy.log");
    assert.ok(mains.length >= 2, `rotated ${mains.length} times`);
    // Each rotated main file has its copy, of the same time stamp and with the same records.
    assert.deepEqual(
      copies.map((f) => f.slice("audit-copy.log".length)),
      mains.map((f) => f.slice("audit.log".length)),
    );
    for (const [i, m] of mains.entries())
      assert.equal(
        readFileSync(join(other, copies[i] as string), "utf8"),
        readFileSync(join(d, m), "utf8"),
        `${m} and its copy`,
      );
    assert.equal(readFileSync(copyPath, "utf8"), readFileSync(path, "utf8"));
  });

  it("goes on with the chain of the rotated file after a restart that finds the next file empty (disk full right after a rotation)", async (t) => {
    const d = smallTmpfs(t);
    if (d === undefined) return;
    const path = join(d, "audit.log");
    const clock = createManualClock(Date.UTC(2026, 11, 5));
    const open = () =>
      openAuditLog({ path, maxBytes: 1024, clock, logger: silentLogger, alarm: () => {} });
    let log = await open();
    for (let i = 0; i < 3; i++) await log.append(fields(i));
    const filler = join(d, "filler");
    assert.throws(() => writeFileSync(filler, Buffer.alloc(8 * 1024 * 1024)), { code: "ENOSPC" });
    // The rotation (rename, create) still works; no record fits in the next file.
    for (let i = 3; i < 8; i++) await log.append(fields(i)).catch(() => {});
    await log.close();
    assert.equal(readFileSync(path, "utf8"), "", "rotated, then nothing written");
    rmSync(filler);
    log = await open(); // the daemon restarted once space was freed
    await log.append(fields(100));
    await log.close();
    const all = [...rotatedFiles(d, "audit.log").map((f) => join(d, f)), path];
    const v = verifyAuditFiles(all);
    assert.equal(v.ok, true, JSON.stringify(v.problem));
  });

  it("goes on with the chain after a kill -9 between renaming the files for a rotation and opening the next ones", async () => {
    const d = dir();
    const path = join(d, "audit.log");
    const copyPath = join(d, "copy", "audit-copy.log");
    mkdirSync(join(d, "copy"));
    await threeRecords(path, copyPath);
    // The step of a rotation a crash can stop at: both files renamed, no next file yet.
    const signal = await rotateInChild(path, copyPath, {
      afterRename: `process.kill(process.pid, "SIGKILL")`,
      failed: "",
    });
    assert.equal(signal, "SIGKILL");
    assert.equal(existsSync(path), false, "killed after the rename");
    const log = await openAuditLog({ path, copyPath, logger: silentLogger });
    await log.append(fields(3));
    await log.close();
    for (const [p, base] of [
      [path, "audit.log"],
      [copyPath, "audit-copy.log"],
    ] as const) {
      const all = [...rotatedFiles(join(p, ".."), base).map((f) => join(p, "..", f)), p];
      const v = verifyAuditFiles(all);
      assert.equal(v.ok, true, `${base}: ${JSON.stringify(v.problem)}`);
      assert.equal(v.records, 6);
    }
  });

  it("keeps the copy's files paired with the main file's after a kill -9 while a rotation was half undone", async (t) => {
    if (!runsAsRoot(t, "for chattr +i")) return;
    const d = dir();
    const path = join(d, "audit.log");
    const copyDir = join(d, "copy");
    const copyPath = join(copyDir, "audit-copy.log");
    mkdirSync(copyDir);
    await threeRecords(path, copyPath);
    t.after(() => execFileSync("chattr", ["-i", copyDir]));
    // Both files renamed, then the copy's directory turns immutable: its next
    // file cannot be made, the main file's rename is undone, the copy's
    // cannot be; the trail refuses writes, and then the process is killed.
    const signal = await rotateInChild(path, copyPath, {
      afterRename: `execFileSync("chattr", ["+i", ${JSON.stringify(copyDir)}])`,
      failed: `process.kill(process.pid, "SIGKILL")`,
    });
    assert.equal(signal, "SIGKILL");
    execFileSync("chattr", ["-i", copyDir]);
    assert.equal(existsSync(copyPath), false, "the copy was left renamed");
    assert.equal(existsSync(path), true, "the main file's rename was undone");
    const log = await openAuditLog({ path, copyPath, maxBytes: 2048, logger: silentLogger });
    for (let i = 3; i < 20; i++) await log.append(fields(i));
    await log.close();
    const mains = rotatedFiles(d, "audit.log");
    const copies = rotatedFiles(copyDir, "audit-copy.log");
    assert.ok(mains.length >= 2, `rotated ${mains.length} times`);
    assert.deepEqual(
      copies.map((f) => f.slice("audit-copy.log".length)),
      mains.map((f) => f.slice("audit.log".length)),
      "each rotated main file has its copy",
    );
    for (const [i, m] of mains.entries())
      assert.equal(
        readFileSync(join(copyDir, copies[i] as string), "utf8"),
        readFileSync(join(d, m), "utf8"),
        `${m} and its copy`,
      );
    assert.equal(readFileSync(copyPath, "utf8"), readFileSync(path, "utf8"));
  });

  it("keeps the copy's files paired after a crash between renaming the main file and the copy", async () => {
    const d = dir();
    const path = join(d, "audit.log");
    const copyPath = join(d, "audit-copy.log");
    let log = await openAuditLog({ path, copyPath, logger: silentLogger });
    for (let i = 0; i < 3; i++) await log.append(fields(i));
    await log.close();
    // What a kill -9 between the two renames leaves (each rename is atomic).
    renameSync(path, `${path}.2026-12-05T00-00-00-000Z`);
    log = await openAuditLog({ path, copyPath, logger: silentLogger });
    await log.append(fields(3));
    await log.close();
    assert.deepEqual(rotatedFiles(d, "audit-copy.log"), rotatedFiles(d, "audit.log"));
    assert.equal(readFileSync(copyPath, "utf8"), readFileSync(path, "utf8"));
    assert.deepEqual(verifyAuditFiles([path]), { ok: true, files: 1, records: 6 });
  });

  it("rotates a file that a failed write left a torn tail in without that tail", async (t) => {
    const d = smallTmpfs(t);
    if (d === undefined) return;
    const path = join(d, "audit.log");
    const clock = createManualClock(Date.UTC(2026, 11, 5));
    const log = await openAuditLog({
      path,
      maxAgeMs: 3_600_000,
      clock,
      logger: silentLogger,
      alarm: () => {},
    });
    for (let i = 0; i < 3; i++) await log.append(fields(i));
    const filler = join(d, "filler");
    assert.throws(() => writeFileSync(filler, Buffer.alloc(8 * 1024 * 1024)), { code: "ENOSPC" });
    // The disk is full but for the rest of the file's last page: a large record is written in part.
    const large = { ...fields(3), args: "x".repeat(8000) };
    await assert.rejects(log.append(large), { reason: "AUDIT_UNAVAILABLE" });
    rmSync(filler);
    clock.advance(2 * 3_600_000); // the next write rotates the file by age first
    await log.append(fields(4));
    await log.close();
    const all = [...rotatedFiles(d, "audit.log").map((f) => join(d, f)), path];
    assert.equal(all.length, 2, "rotated once");
    const v = verifyAuditFiles(all);
    assert.equal(v.ok, true, JSON.stringify(v.problem));
  });

  it("names a rotated file and its copy alike when a file of that name is left in one directory only", async () => {
    const d = dir();
    const path = join(d, "audit.log");
    const copyDir = join(d, "copy");
    const copyPath = join(copyDir, "audit-copy.log");
    mkdirSync(copyDir);
    // The clock stands still: every rotation has the same time stamp.
    const clock = createManualClock(Date.UTC(2026, 11, 5));
    const open = () =>
      openAuditLog({ path, copyPath, maxBytes: 1024, clock, logger: silentLogger });
    let log = await open();
    for (let i = 0; i < 6; i++) await log.append(fields(i));
    await log.close();
    // The operator archives the rotated copies elsewhere.
    for (const f of rotatedFiles(copyDir, "audit-copy.log")) rmSync(join(copyDir, f));
    log = await open();
    for (let i = 6; i < 12; i++) await log.append(fields(i));
    await log.close();
    const mains = rotatedFiles(d, "audit.log");
    const copies = rotatedFiles(copyDir, "audit-copy.log");
    assert.ok(copies.length >= 1, `rotated ${copies.length} times after the archiving`);
    for (const c of copies) {
      const m = `audit.log${c.slice("audit-copy.log".length)}`;
      assert.ok(mains.includes(m), `${c} has its main file`);
      assert.equal(
        readFileSync(join(copyDir, c), "utf8"),
        readFileSync(join(d, m), "utf8"),
        `${c} holds what ${m} holds`,
      );
    }
  });

  it("rotates by age a file that the daemon reopened since it was started", async () => {
    const d = dir();
    const path = join(d, "audit.log");
    const clock = createManualClock(Date.UTC(2026, 11, 5));
    // Restarted every 40 minutes (an update, a crash loop), with files of at most an hour.
    for (let run = 0; run < 3; run++) {
      const log = await openAuditLog({ path, maxAgeMs: 3_600_000, clock, logger: silentLogger });
      await log.append(fields(run));
      await log.close();
      clock.advance(40 * 60_000);
    }
    assert.equal(rotatedFiles(d, "audit.log").length, 1, "rotated once the file was an hour old");
  });

  it("continues the chain across restarts of a file made append-only (chattr +a)", async (t) => {
    if (!runsAsRoot(t, "for chattr +a")) return;
    const path = join(dir(), "audit.log");
    for (let run = 0; run < 3; run++) {
      const log = await openAuditLog({ path, logger: silentLogger });
      await log.append(fields(run));
      await log.close();
      if (run === 0) {
        // Hardening an audit trail: the file may only be appended to.
        execFileSync("chattr", ["+a", path]);
        t.after(() => execFileSync("chattr", ["-a", path]));
      }
    }
    const v = verifyAuditFiles([path]);
    assert.equal(v.ok, true, JSON.stringify(v.problem));
    assert.equal(v.records, 6);
  });

  it("does not rotate a file that holds no record yet, so a restart finds the chain", async (t) => {
    const d = smallTmpfs(t);
    if (d === undefined) return;
    const path = join(d, "audit.log");
    const clock = createManualClock(Date.UTC(2026, 11, 5));
    const open = () =>
      openAuditLog({ path, maxAgeMs: 3_600_000, clock, logger: silentLogger, alarm: () => {} });
    let log = await open();
    await log.append(fields(1));
    const filler = join(d, "filler");
    assert.throws(() => writeFileSync(filler, Buffer.alloc(8 * 1024 * 1024)), { code: "ENOSPC" });
    // The disk stays full for hours: each try rotates by age, then cannot write.
    for (let i = 0; i < 3; i++) {
      clock.advance(2 * 3_600_000);
      await assert.rejects(log.append(fields(2 + i)), { reason: "AUDIT_UNAVAILABLE" });
    }
    await log.close();
    rmSync(filler);
    log = await open();
    await log.append(fields(10));
    await log.close();
    const rotated = rotatedFiles(d, "audit.log").map((f) => join(d, f));
    assert.equal(rotated.length, 1, "one rotation: the file with records");
    const v = verifyAuditFiles([...rotated, path]);
    assert.equal(v.ok, true, JSON.stringify(v.problem));
  });

  for (const [ahead, key] of [
    ["main file", undefined],
    ["copy", Buffer.alloc(32, 9)],
  ] as const)
    it(`keeps the copy's chain whole after a crash left the last write in the ${ahead} only`, async () => {
      const d = dir();
      const path = join(d, "audit.log");
      const copyPath = join(d, "other-disk", "audit-copy.log");
      mkdirSync(join(d, "other-disk"));
      let log = await openAuditLog({ path, copyPath, hmacKey: key, logger: silentLogger });
      for (let i = 0; i < 3; i++) await log.append(fields(i));
      await log.close();
      // What a kill -9 between the two writes of a group of records leaves
      // (seen in a kill -9 loop): the group in one file, not in the other.
      const last = JSON.parse(lines(path).at(-1) as string) as { seq: number; hash: string };
      let prev = last.hash;
      let group = "";
      for (let i = 0; i < 2; i++) {
        const unhashed = {
          ts: "2026-12-05T00:00:00.000Z",
          seq: last.seq + 1 + i,
          ...fields(10 + i),
          prev,
        };
        prev = chainHash(unhashed, key);
        group += recordLine({ ...unhashed, hash: prev });
      }
      appendFileSync(ahead === "copy" ? copyPath : path, group);
      log = await openAuditLog({ path, copyPath, hmacKey: key, logger: silentLogger });
      await log.append(fields(3));
      await log.close();
      for (const p of [path, copyPath]) {
        const v = verifyAuditFiles([p], key);
        assert.equal(v.ok, true, `${p}: ${JSON.stringify(v.problem)}`);
      }
      assert.equal(readFileSync(copyPath, "utf8"), readFileSync(path, "utf8"));
      const recovered = lines(path).map((l) => JSON.parse(l) as { event: string; reason: string });
      assert.match(
        recovered.at(-2)?.reason ?? "",
        /2 record\(s\) at the end of .* missing from .*: copied over/,
      );
    });

  for (const torn of ["main file", "copy"] as const)
    it(`takes over no record from behind a torn middle in the ${torn}`, async () => {
      const { path, copyPath } = await trailWithCopy(8);
      // The power loss hit the last group (seq 8 and 9): in one file record 8
      // came back as zeros and 9 whole, the other file got record 8 only.
      const [tornPath, shortPath] = torn === "copy" ? [copyPath, path] : [path, copyPath];
      const ls = lines(path);
      writeFileSync(
        tornPath,
        `${[...ls.slice(0, 7), "\0".repeat((ls[7] as string).length), ls[8]].join("\n")}\n`,
      );
      writeFileSync(shortPath, `${ls.slice(0, 8).join("\n")}\n`);
      const log = await openAuditLog({ path, copyPath, logger: silentLogger });
      await log.append(fields(9));
      await log.close();
      for (const p of [path, copyPath]) {
        const v = verifyAuditFiles([p]);
        assert.deepEqual(
          v,
          { ok: true, files: 1, records: 10 },
          `${p}: ${JSON.stringify(v.problem)}`,
        );
      }
      assert.equal(readFileSync(copyPath, "utf8"), readFileSync(path, "utf8"));
      const recs = lines(path).map((l) => JSON.parse(l) as AuditRecord);
      assert.deepEqual(
        recs.slice(0, 8),
        ls.slice(0, 8).map((l) => JSON.parse(l)),
      );
      assert.equal(recs[8]?.event, "audit.recovered");
      assert.match(
        recs[8]?.reason ?? "",
        /1 record\(s\) at the end of .* missing from .*: copied over/,
      );
      assert.ok(
        !recs.some((r) => r.requestId === "r-7"),
        "record 9 of the torn group is not in the chain",
      );
    });

  it("brings the records behind a line broken in the main file's tail back from the copy", async () => {
    const { path, copyPath } = await trailWithCopy(20);
    const ls = lines(path);
    ls[9] = "x".repeat((ls[9] as string).length); // bit rot in an acknowledged record
    writeFileSync(path, `${ls.join("\n")}\n`);
    const log = await openAuditLog({ path, copyPath, logger: silentLogger });
    await log.close();
    assert.equal(readFileSync(path, "utf8"), readFileSync(copyPath, "utf8"));
    const recs = lines(path).map((l) => JSON.parse(l) as AuditRecord);
    assert.equal(recs.length, 22);
    assert.match(recs[21]?.reason ?? "", /12 record\(s\) at the end of .*audit-copy\.log missing/);
    assert.equal(verifyAuditFiles([path]).ok, true);
  });

  it("says in the chain when the copy ends at another record of the same seq", async () => {
    const { path, copyPath } = await trailWithCopy(3);
    // The copy's last record replaced by another one of the same seq, chained alike.
    const ls = lines(copyPath);
    const { hash: _h, ...unhashed } = JSON.parse(ls.at(-1) as string) as AuditRecord;
    const edited = { ...unhashed, principal: "someone-else" };
    const other = recordLine({ ...edited, hash: chainHash(edited, undefined) });
    writeFileSync(copyPath, `${ls.slice(0, -1).join("\n")}\n${other}`);
    assert.equal(verifyAuditFiles([copyPath]).ok, true, "the copy verifies on its own");
    const log = await openAuditLog({ path, copyPath, logger: silentLogger });
    await log.append(fields(3));
    await log.close();
    const recovered = lines(copyPath).map(
      (l) => JSON.parse(l) as { event: string; reason: string },
    );
    assert.equal(recovered.at(-2)?.event, "audit.recovered");
    assert.match(
      recovered.at(-2)?.reason ?? "",
      /audit-copy\.log ends at another record than .*audit\.log/,
    );
  });

  it("names rotated files in the order they were written when the clock steps back", async () => {
    const d = dir();
    const path = join(d, "audit.log");
    const t0 = Date.UTC(2026, 11, 5, 12);
    const clock = createManualClock(t0);
    const log = await openAuditLog({ path, maxBytes: 1024, clock, logger: silentLogger });
    for (let i = 0; i < 6; i++) await log.append(fields(i));
    clock.set(t0 - 86_400_000); // NTP steps the clock back a day
    for (let i = 6; i < 12; i++) await log.append(fields(i));
    await log.close();
    // The operator's `hvctl audit verify audit.log.* audit.log`: the files in name order.
    const all = [...rotatedFiles(d, "audit.log").map((f) => join(d, f)), path];
    assert.ok(all.length >= 5, `rotated ${all.length - 1} times`);
    const v = verifyAuditFiles(all);
    assert.equal(v.ok, true, JSON.stringify(v.problem));
  });

  it("rotates by age after the clock steps back", async () => {
    const d = dir();
    const path = join(d, "audit.log");
    const t0 = Date.UTC(2026, 11, 5, 12);
    const clock = createManualClock(t0);
    const log = await openAuditLog({ path, maxAgeMs: 3_600_000, clock, logger: silentLogger });
    await log.append(fields(1));
    clock.set(t0 - 86_400_000); // the clock was a day ahead, and NTP corrects it
    await log.append(fields(2));
    clock.advance(2 * 3_600_000);
    await log.append(fields(3));
    await log.close();
    assert.equal(rotatedFiles(d, "audit.log").length, 1, "two hours on, the file rotated");
  });

  it("closes within AUDIT_CLOSE_TIMEOUT_MS while a write hangs, failing the record as not written", async () => {
    const d = dir();
    const path = join(d, "audit.log");
    const fifo = join(d, "nobody-reads");
    execFileSync("mkfifo", [fifo]);
    const index = fileURLToPath(new URL("./index.js", import.meta.url));
    const core = fileURLToPath(new URL("../core/index.js", import.meta.url));
    // One I/O thread, held by opening a FIFO nobody reads: like a disk that
    // stopped answering, the audit write queued behind it never ends.
    const script = `
      import { openSync, closeSync, constants } from "node:fs";
      import { open } from "node:fs/promises";
      const { openAuditLog } = await import(${JSON.stringify(index)});
      const { silentLogger } = await import(${JSON.stringify(core)});
      const log = await openAuditLog({ path: ${JSON.stringify(path)}, logger: silentLogger, alarm: () => {} });
      void open(${JSON.stringify(fifo)}, "w");
      const appended = log.append(${JSON.stringify(fields(1))}).then(() => "written", (e) => e.reason ?? String(e));
      const start = performance.now();
      await log.close();
      const closeMs = performance.now() - start;
      const outcome = await appended;
      console.log(JSON.stringify({ closeMs, outcome }));
      closeSync(openSync(${JSON.stringify(fifo)}, constants.O_RDONLY | constants.O_NONBLOCK));
      process.exit(0);`;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
      env: { ...process.env, UV_THREADPOOL_SIZE: "1" },
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    child.stdout.on("data", (b: Buffer) => {
      out += b.toString();
    });
    const exited = new Promise((resolve) => child.once("exit", resolve));
    const bound = setTimeout(() => child.kill("SIGKILL"), AUDIT_CLOSE_TIMEOUT_MS + 10_000);
    await exited;
    clearTimeout(bound);
    assert.notEqual(out, "", "close() returned");
    const { closeMs, outcome } = JSON.parse(out) as { closeMs: number; outcome: string };
    assert.equal(outcome, "AUDIT_UNAVAILABLE", "the pending record failed, never acknowledged");
    assert.ok(closeMs < AUDIT_CLOSE_TIMEOUT_MS + 2000, `close took ${closeMs} ms`);
  });
});
