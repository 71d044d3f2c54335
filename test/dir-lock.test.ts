// The lock that keeps one daemon (and one node agent) per directory
// (src/client/dir-lock.ts). Its first form, a plain file, had a race: a
// starter that judged the file stale renamed it aside and, when what it had
// moved was a racer's fresh lock, linked it back; in between a third starter
// could take the lock, the link back failed, and the racer's fresh lock was
// deleted: two daemons each held the directory.
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { lockDirectory } from "../src/client/index.js";
import { eventually } from "./helpers/eventually.js";
import { missingTool, runsAsRoot, runsOk } from "./helpers/required-tools.js";

const DATA_DIR_LOCK = fileURLToPath(new URL("../src/server/data-dir-lock.js", import.meta.url));
/** The module that loads better-sqlite3 for the kernel lock (a starter run as another user loads it first). */
const KERNEL_LOCK = new URL("../src/client/kernel-lock.js", import.meta.url).href;
const LOCK = ".debvisor-rpcd.lock";
/** Runs a command as pid 1 of a new pid namespace (a container's), unprivileged where user namespaces are allowed. */
const UNSHARE = [
  "unshare",
  "--user",
  "--map-root-user",
  "--pid",
  "--fork",
  "--mount-proc",
  "--kill-child",
];

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
  o: StarterOptions,
): Promise<{ code: number | null; out: string }> {
  return spawnStarter(dir, tag, o).result;
}

interface StarterOptions {
  readonly startMs?: number;
  readonly holdMs?: number;
  readonly die?: boolean;
  /** Run in a pid namespace of its own (a container's), through `unshare`. */
  readonly ownPidNamespace?: boolean;
  /** Take the lock as this user and group (a service user's daemon); the process starts as root. */
  readonly uid?: number;
}

/** As {@link starter}, also answering the process, to kill it while it holds the lock. */
function spawnStarter(
  dir: string,
  tag: string,
  o: StarterOptions,
): { child: ChildProcess; result: Promise<{ code: number | null; out: string }> } {
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
    if (${o.uid ?? -1} >= 0) {
      // Becomes the other user only now: the checkout may be one that user cannot read (a 0700
      // temporary clone). better-sqlite3 is loaded (and its native part) as the lock will ask for it.
      const { createRequire } = await import("node:module");
      const Database = createRequire(${JSON.stringify(KERNEL_LOCK)})("better-sqlite3");
      new Database(":memory:").close();
      process.setgroups([${o.uid ?? -1}]);
      process.setgid(${o.uid ?? -1});
      process.setuid(${o.uid ?? -1});
    }
    // Asleep until just before the start (racers spinning for a second starved the machine),
    // then a spin to meet it to the millisecond.
    await new Promise((r) => setTimeout(r, ${o.startMs ?? 0} - Date.now() - 20));
    while (Date.now() < ${o.startMs ?? 0});
    let lock;
    try {
      lock = lockDataDirectories([${JSON.stringify(dir)}]);
    } catch (err) {
      if (err.name !== "DataDirInUseError") {
        process.stdout.write("failed: " + err.message);
        process.exit(4);
      }
      process.stdout.write("refused by " + err.pid + ": " + err.message);
      process.exit(3);
    }
    fs.appendFileSync(${JSON.stringify(log)}, "enter ${tag}\\n");
    if (${o.die === true}) process.kill(process.pid, "SIGKILL");
    nap(${o.holdMs ?? 300});
    fs.appendFileSync(${JSON.stringify(log)}, "leave ${tag}\\n");
    lock.release();`;
  const node = [process.execPath, "--input-type=module", "-e", script];
  const [file, ...args] = o.ownPidNamespace === true ? [...UNSHARE, ...node] : node;
  const child = spawn(file as string, args, {
    stdio: ["ignore", "pipe", "inherit"],
    timeout: 30_000,
    killSignal: "SIGKILL",
  });
  let out = "";
  child.stdout.on("data", (d) => {
    out += String(d);
  });
  return {
    child,
    result: new Promise((resolve) => child.once("close", (code) => resolve({ code, out }))),
  };
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
        if (r.code === 3 && /^refused by 0:/.test(r.out))
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
    assert.equal(
      r.out,
      `refused by ${process.pid}: data directory in use by pid ${process.pid}: ${dir}`,
    );
    assert.ok(readFileSync(join(dir, LOCK), "utf8").startsWith(`${process.pid} `), "left alone");
  });
});

/** Whether a holder's lock named `tag` is in `dir`, by the log it keeps. */
function entered(dir: string, tag: string): boolean {
  const log = join(dir, "holders.log");
  return existsSync(log) && readFileSync(log, "utf8").includes(`enter ${tag}\n`);
}

/** Kills a holder and waits for it (and, in its own pid namespace, everything in it) to be gone. */
async function kill(child: ChildProcess): Promise<void> {
  const gone = new Promise((resolve) => child.once("close", resolve));
  child.kill("SIGKILL");
  await gone;
}

describe("one process per directory: the kernel holds the lock", () => {
  const root = mkdtempSync(join(tmpdir(), "dv-dir-lock-kernel-"));
  after(() => rmSync(root, { recursive: true, force: true }));
  const unshareSkip = missingTool(
    "unshare with user and pid namespaces",
    runsOk(UNSHARE[0] as string, [...UNSHARE.slice(1), "true"]),
    "util-linux, and user namespaces allowed (sysctl kernel.unprivileged_userns_clone=1)",
  );

  it("refuses a starter while a daemon in another pid namespace holds the directory, and takes it over at once when that one is killed", {
    skip: unshareSkip,
  }, async () => {
    const dir = join(root, "namespace");
    const inside = spawnStarter(dir, "inside", { ownPidNamespace: true, holdMs: 60_000 });
    try {
      await eventually(() => entered(dir, "inside"), { timeoutMs: 20_000 });
      const outside = await starter(dir, "outside", { holdMs: 0 });
      assert.equal(
        outside.code,
        3,
        `the daemon outside took a running daemon's directory: ${outside.out}`,
      );
      // Inside its namespace the holder is pid 1; here pid 1 is another process.
      assert.equal(
        outside.out,
        `refused by 1: data directory in use by pid 1 in another pid namespace: ${dir}`,
      );
    } finally {
      await kill(inside.child);
    }
    const next = await starter(dir, "next", { holdMs: 0 });
    assert.equal(next.code, 0, `the killed daemon's lock was not taken over: ${next.out}`);
  });

  it("refuses a starter while a live process holds the directory, whatever pid its record names", async () => {
    const dir = join(root, "record");
    const holder = spawnStarter(dir, "holder", { holdMs: 60_000 });
    try {
      await eventually(() => entered(dir, "holder"), { timeoutMs: 20_000 });
      // What a holder in another pid namespace leaves: a pid no process here has.
      const [record] = readdirSync(join(dir, LOCK));
      const dead = await deadToken();
      writeFileSync(join(dir, LOCK, record as string), `${dead}\n`);
      const second = await starter(dir, "second", { holdMs: 0 });
      assert.equal(second.code, 3, `took a live holder's directory: ${second.out}`);
      const pid = dead.split(" ")[0];
      assert.equal(
        second.out,
        `refused by ${pid}: data directory in use by pid ${pid} in another pid namespace: ${dir}`,
      );
    } finally {
      await kill(holder.child);
    }
  });

  it("refuses a starter while an earlier version, which knows only the folder, holds the directory", () => {
    const dir = join(root, "earlier-folder");
    mkdirSync(join(dir, LOCK), { recursive: true });
    const start = readFileSync("/proc/self/stat", "utf8");
    const token = `${process.pid} ${start.slice(start.lastIndexOf(")") + 2).split(" ")[19]}`;
    writeFileSync(join(dir, LOCK, "1-000000000000"), `${token}\n`);
    assert.throws(() => lockDirectory(dir, LOCK), {
      name: "DirectoryInUseError",
      message: `directory in use by pid ${process.pid}: ${dir}`,
    });
    assert.equal(
      readFileSync(join(dir, LOCK, "1-000000000000"), "utf8"),
      `${token}\n`,
      "left alone",
    );
  });

  it("takes over a lock whose record names no process (a link, a folder, garbage) when no process holds it", async () => {
    const target = join(root, "link-target");
    mkdirSync(target);
    writeFileSync(join(target, "keep"), "");
    const cases: [string, (lock: string) => void][] = [
      ["a link to a folder", (lock) => symlinkSync(target, lock)],
      ["a link to nothing", (lock) => symlinkSync(join(root, "nothing"), lock)],
      [
        "a folder holding garbage",
        (lock) => {
          mkdirSync(lock);
          writeFileSync(join(lock, "1-000000000000"), "not a pid\n");
        },
      ],
      [
        "a folder holding a link",
        (lock) => {
          mkdirSync(lock);
          symlinkSync(join(target, "keep"), join(lock, "1-000000000000"));
        },
      ],
      [
        "a folder holding a folder",
        (lock) => mkdirSync(join(lock, "1-000000000000"), { recursive: true }),
      ],
    ];
    const found: string[] = [];
    for (const [i, [what, make]] of cases.entries()) {
      const dir = join(root, `garbage-${i}`);
      mkdirSync(dir);
      make(join(dir, LOCK));
      const r = await starter(dir, "next", { holdMs: 0 });
      if (r.code !== 0) found.push(`${what}: ${r.out}`);
      else if (existsSync(join(dir, LOCK))) found.push(`${what}: left after the release`);
    }
    assert.deepEqual(found, [], "refused, naming no live holder");
    assert.deepEqual(readdirSync(target), ["keep"], "a link's target was left alone");
  });

  it("sweeps the folders of starters killed before they took the lock", async () => {
    const dir = join(root, "leftovers");
    mkdirSync(dir);
    const dead = join(dir, `${LOCK}.12345-0123456789ab`);
    mkdirSync(dead);
    writeFileSync(join(dead, "12345-0123456789ab"), `${await deadToken()}\n`);
    mkdirSync(join(dir, `${LOCK}.1-000000000000`));
    writeFileSync(join(dir, `${LOCK}.keep`), "");
    const r = await starter(dir, "next", { holdMs: 0 });
    assert.equal(r.code, 0, r.out);
    assert.deepEqual(
      readdirSync(dir).filter((n) => n.startsWith(LOCK) && !n.endsWith(".db")),
      [`${LOCK}.keep`],
      "only the starters' leftovers were removed",
    );
  });

  it("holds between two holders in one process: the second is refused until the first lets go", () => {
    const dir = join(root, "one-process");
    mkdirSync(dir);
    const release = lockDirectory(dir, LOCK);
    assert.throws(() => lockDirectory(dir, LOCK), {
      name: "DirectoryInUseError",
      message: `directory in use by pid ${process.pid}: ${dir}`,
    });
    release();
    lockDirectory(dir, LOCK)();
  });

  it("tells a service user's daemon which lock a crashed root daemon left and what to do", async (t) => {
    if (!runsAsRoot(t, "a lock left by root, then a daemon of another user")) return;
    const dir = join(root, "root-left");
    mkdirSync(dir);
    // The service user's data directory, which root may enter too.
    chmodSync(root, 0o755);
    chownSync(dir, 65534, 65534);
    const crashed = await starter(dir, "root", { die: true });
    assert.equal(crashed.code, null, "the root daemon was killed holding the lock");
    const r = await starter(dir, "service", { holdMs: 0, uid: 65534 });
    assert.equal(r.code, 4, r.out);
    assert.equal(
      r.out,
      `failed: ${dir}/${LOCK}: permission denied: a lock left by another user (a daemon or agent run as root?); if none runs on ${dir}, remove ${dir}/${LOCK} and ${dir}/${LOCK}.*, or start as that user`,
    );
    // Done as told (and root's log out of the way): the kernel lock's file root left is the service user's.
    rmSync(join(dir, LOCK), { recursive: true });
    rmSync(join(dir, "holders.log"));
    const next = await starter(dir, "service", { holdMs: 0, uid: 65534 });
    assert.equal(
      next.code,
      0,
      `root's daemon left a lock the service user cannot take: ${next.out}`,
    );
  });

  it("never follows a link the directory's owner planted where the kernel lock's file belongs", (t) => {
    if (!runsAsRoot(t, "a daemon run as root in the service user's directory")) return;
    const dir = join(root, "planted-link");
    const outside = join(root, "root-only");
    mkdirSync(dir);
    mkdirSync(outside, { mode: 0o700 });
    chownSync(dir, 65534, 65534);
    // The service user, owning its data directory, points the lock's file at a path of root's.
    const target = join(outside, "made-by-root");
    symlinkSync(target, join(dir, `${LOCK}.db`));
    assert.throws(() => lockDirectory(dir, LOCK), {
      message: `${dir}/${LOCK}.db: not a plain file of its own (a link, a folder?): the lock's file; if no daemon or agent runs on ${dir}, remove it`,
    });
    assert.equal(
      existsSync(target),
      false,
      "root created the file the link names (and gave it to the service user)",
    );
    // Removed as told, the lock's file root makes is the service user's.
    rmSync(join(dir, `${LOCK}.db`));
    lockDirectory(dir, LOCK)();
    assert.equal(statSync(join(dir, `${LOCK}.db`)).uid, 65534);
  });

  it("says a full disk, not another user's lock, when the kernel lock's file cannot be written", (t) => {
    if (!runsAsRoot(t, "to mount a tmpfs")) return;
    const mnt = mkdtempSync(join(tmpdir(), "dv-dir-lock-full-"));
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt]);
    try {
      const dir = join(mnt, "data");
      mkdirSync(dir);
      try {
        writeFileSync(join(mnt, "filler"), Buffer.alloc(1024 * 1024));
      } catch {
        // ENOSPC: the filler took every byte there was.
      }
      assert.throws(
        () => lockDirectory(dir, LOCK),
        (err: Error) => {
          assert.equal(err.message, `${dir}/${LOCK}.db: database or disk is full`);
          return true;
        },
      );
      // Room again: the directory is usable, nothing left in the way.
      rmSync(join(mnt, "filler"));
      lockDirectory(dir, LOCK)();
    } finally {
      execFileSync("umount", [mnt]);
      rmSync(mnt, { recursive: true, force: true });
    }
  });

  it("names no dead holder while the kernel lock's holder is still starting (stopped before its record)", async () => {
    const dir = join(root, "starting");
    const crashed = await starter(dir, "crashed", { die: true });
    assert.equal(crashed.code, null, "the first holder was killed holding the lock");
    const deadPid = readdirSync(join(dir, LOCK))[0]?.split("-")[0];
    // The next one takes the kernel lock and is stopped (SIGSTOP, a slow disk) before its folder is made.
    const script = `
      const fs = (await import("node:fs")).default;
      const mkdir = fs.mkdirSync;
      fs.mkdirSync = (p, ...rest) => {
        if (String(p).includes(${JSON.stringify(`${LOCK}.`)})) process.kill(process.pid, "SIGSTOP");
        return mkdir(p, ...rest);
      };
      (await import("node:module")).syncBuiltinESMExports();
      const { lockDataDirectories } = await import(${JSON.stringify(DATA_DIR_LOCK)});
      lockDataDirectories([${JSON.stringify(dir)}]);`;
    const stopped = spawn(process.execPath, ["--input-type=module", "-e", script], {
      stdio: "ignore",
      timeout: 30_000,
      killSignal: "SIGKILL",
    });
    try {
      await eventually(
        () =>
          readFileSync(`/proc/${stopped.pid}/stat`, "utf8").split(") ")[1]?.startsWith("T") ===
          true,
        { timeoutMs: 20_000 },
      );
      const r = await starter(dir, "third", { holdMs: 0 });
      assert.equal(r.code, 3, r.out);
      assert.equal(
        r.out,
        `refused by 0: data directory in use by a starter, pid unknown: ${dir}`,
        `the dead holder (pid ${deadPid}) was named, said to run in another pid namespace`,
      );
    } finally {
      await kill(stopped);
    }
    const next = await starter(dir, "next", { holdMs: 0 });
    assert.equal(next.code, 0, next.out);
  });
});
