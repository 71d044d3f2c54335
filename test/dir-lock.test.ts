// The lock that keeps one daemon (and one node agent) per directory
// (src/client/dir-lock.ts). Its first form, a plain file, had a race: a
// starter that judged the file stale renamed it aside and, when what it had
// moved was a racer's fresh lock, linked it back; in between a third starter
// could take the lock, the link back failed, and the racer's fresh lock was
// deleted: two daemons each held the directory.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";

const DATA_DIR_LOCK = fileURLToPath(new URL("../src/server/data-dir-lock.js", import.meta.url));
const LOCK = ".debvisor-rpcd.lock";

/**
 * A process taking the data-directory lock of `dir` as `tag` from `startMs`:
 * it logs `enter tag` to `dir`/holders.log once it holds the lock and `leave
 * tag` before it releases it, holding it `holdMs`; with `die` it is killed
 * holding it instead. Refused, it prints the pid named and exits 3. Every
 * read of the lock is followed by a pause of up to 20 ms (a starter the
 * scheduler set aside between judging the lock and acting on it).
 */
function starter(
  dir: string,
  tag: string,
  o: { startMs?: number; holdMs?: number; die?: boolean },
): Promise<{ code: number | null; out: string }> {
  const log = join(dir, "holders.log");
  const script = `
    const fs = (await import("node:fs")).default;
    const { syncBuiltinESMExports } = await import("node:module");
    const read = fs.readFileSync;
    const nap = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    fs.readFileSync = (p, ...rest) => {
      const r = read(p, ...rest);
      if (String(p).includes(${JSON.stringify(LOCK)})) nap(Math.random() * 20);
      return r;
    };
    syncBuiltinESMExports();
    const { lockDataDirectories } = await import(${JSON.stringify(DATA_DIR_LOCK)});
    while (Date.now() < ${o.startMs ?? 0});
    let lock;
    try {
      lock = lockDataDirectories([${JSON.stringify(dir)}]);
    } catch (err) {
      if (err.name !== "DataDirInUseError") throw err;
      process.stdout.write("refused by " + err.pid);
      process.exit(3);
    }
    fs.appendFileSync(${JSON.stringify(log)}, "enter ${tag}\\n");
    if (${o.die === true}) process.kill(process.pid, "SIGKILL");
    nap(${o.holdMs ?? 300});
    fs.appendFileSync(${JSON.stringify(log)}, "leave ${tag}\\n");
    lock.release();`;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    stdio: ["ignore", "pipe", "inherit"],
    timeout: 30_000,
  });
  let out = "";
  child.stdout.on("data", (d) => {
    out += String(d);
  });
  return new Promise((resolve) => child.once("close", (code) => resolve({ code, out })));
}

/** The holders that were inside the lock at once, from the log of enters and leaves. */
function overlaps(logText: string): string[] {
  const found: string[] = [];
  const inside = new Set<string>();
  for (const line of logText.split("\n").filter((l) => l !== "")) {
    const [what, tag] = line.split(" ") as [string, string];
    if (what === "enter" && inside.size > 0)
      found.push(`${tag} entered while ${[...inside].join(", ")} held`);
    if (what === "enter") inside.add(tag);
    else inside.delete(tag);
  }
  return found;
}

/** "pid start-time" of a process that has exited: what a crashed holder's lock holds. */
async function deadToken(): Promise<string> {
  const r = await new Promise<string>((resolve) => {
    const c = spawn(
      process.execPath,
      [
        "-e",
        "const s = require('fs').readFileSync('/proc/self/stat', 'utf8'); process.stdout.write(process.pid + ' ' + s.slice(s.lastIndexOf(')') + 2).split(' ')[19])",
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    let out = "";
    c.stdout.on("data", (d) => {
      out += String(d);
    });
    c.once("close", () => resolve(out));
  });
  assert.match(r, /^\d+ \d+$/);
  return r;
}

describe("one process per directory: the lock", () => {
  const root = mkdtempSync(join(tmpdir(), "dv-dir-lock-"));
  after(() => rmSync(root, { recursive: true, force: true }));

  it("of starters racing over a crashed holder's lock, at most one holds it at a time", async () => {
    const found: string[] = [];
    for (let round = 0; round < 6 && found.length === 0; round++) {
      const dir = join(root, `race-${round}`);
      // Odd rounds: the lock of a daemon that crashed holding it; even: an earlier version's file.
      if (round % 2 === 1) {
        const dead = await starter(dir, "dead", { die: true });
        assert.equal(dead.code, null, "the holder was killed holding the lock");
      } else {
        await starter(dir, "first", { holdMs: 0 });
        writeFileSync(join(dir, LOCK), `${await deadToken()}\n`);
      }
      writeFileSync(join(dir, "holders.log"), "");
      const start = Date.now() + 1500;
      const racers = await Promise.all(
        ["a", "b", "c", "d", "e"].map((t) => starter(dir, `${t}${round}`, { startMs: start })),
      );
      for (const o of overlaps(readFileSync(join(dir, "holders.log"), "utf8")))
        found.push(`round ${round}: ${o}`);
      const codes = racers.map((r) => r.code);
      if (codes.some((c) => c !== 0 && c !== 3)) found.push(`round ${round}: exited ${codes}`);
      if (!codes.includes(0)) found.push(`round ${round}: no racer took the stale lock`);
      for (const r of racers)
        if (r.code === 3 && /refused by 0$/.test(r.out))
          found.push(`round ${round}: refused naming no holder`);
    }
    assert.deepEqual(found, [], "two starters held the directory at once");
  });

  it("a live holder's lock left by an earlier version (a plain file) refuses, naming it", async () => {
    const dir = join(root, "old-version");
    await starter(dir, "first", { holdMs: 0 });
    assert.equal(existsSync(join(dir, LOCK)), false, "released");
    const start = readFileSync("/proc/self/stat", "utf8");
    writeFileSync(
      join(dir, LOCK),
      `${process.pid} ${start.slice(start.lastIndexOf(")") + 2).split(" ")[19]}\n`,
    );
    const r = await starter(dir, "second", {});
    assert.equal(r.code, 3);
    assert.equal(r.out, `refused by ${process.pid}`);
    assert.ok(readFileSync(join(dir, LOCK), "utf8").startsWith(`${process.pid} `), "left alone");
  });
});
