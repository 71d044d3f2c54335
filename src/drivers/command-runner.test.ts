import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { CommandError, LineSplitter, runCommand } from "./command-runner.js";
import { createLocalRunner, runCommand as runStorageCommand } from "./storage-command.js";

const node = process.execPath;
const isKind = (kind: string) => (e: unknown) => e instanceof CommandError && e.kind === kind;

describe("runCommand", () => {
  it("passes arguments literally, with no shell to expand them", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-run-"));
    const marker = join(dir, "pwned");
    const hostile = [`$(touch ${marker})`, `; touch ${marker}`, "`id`", "a b", "*"];
    const r = await runCommand(
      node,
      ["-e", "process.stdout.write(JSON.stringify(process.argv.slice(1)))", ...hostile],
      { timeoutMs: 10_000 },
    );
    assert.deepEqual(JSON.parse(r.stdout), hostile);
    assert.equal(existsSync(marker), false);
  });

  it("resolves with the exit code, stdout and stderr of a failing program", async () => {
    const r = await runCommand(
      node,
      ["-e", "process.stdout.write('out'); process.stderr.write('err'); process.exit(3)"],
      { timeoutMs: 10_000 },
    );
    assert.deepEqual(r, { exitCode: 3, signal: null, stdout: "out", stderr: "err" });
  });

  it("adds env variables to the inherited environment", async () => {
    const r = await runCommand(
      node,
      ["-e", "process.stdout.write(process.env.LC_ALL + ' ' + (process.env.PATH ? 'path' : ''))"],
      { timeoutMs: 10_000, env: { LC_ALL: "C" } },
    );
    assert.equal(r.stdout, "C path");
  });

  it("rejects not-found for a program that does not exist", async () => {
    await assert.rejects(
      runCommand("/nonexistent/dv-virsh", [], { timeoutMs: 10_000 }),
      isKind("not-found"),
    );
  });

  it("kills a program past its timeout, with SIGKILL when it ignores the first signal", {
    timeout: 20_000, // without the SIGKILL the program runs on: fail, not hang
  }, async () => {
    const started = Date.now();
    // A shell ignores SIGTERM within a few ms of its start; a node child took longer than
    // 300 ms to install its handler on a loaded machine and died of the SIGTERM itself.
    // Ignored, not trapped: the sleep it runs inherits that, so the group's SIGTERM ends nothing.
    await assert.rejects(
      runCommand("/bin/sh", ["-c", "trap '' TERM; while :; do sleep 1; done"], {
        timeoutMs: 1000,
        killGraceMs: 300,
      }),
      (e: unknown) => isKind("timeout")(e) && (e as CommandError).result?.signal === "SIGKILL",
    );
    assert.ok(Date.now() - started < 10_000);
  });

  it("sends killSignal first, so a program can wind down (virsh aborts its job on SIGINT)", async () => {
    const ac = new AbortController();
    const run = runCommand(
      node,
      [
        "-e",
        "process.on('SIGINT', () => { process.stdout.write('rolled back'); process.exit(1) }); process.stdout.write('ready\\n'); setInterval(() => {}, 1000)",
      ],
      {
        timeoutMs: 10_000,
        signal: ac.signal,
        killSignal: "SIGINT",
        onStdoutLine: (line) => {
          if (line === "ready") ac.abort();
        },
      },
    );
    await assert.rejects(
      run,
      (e: unknown) =>
        isKind("aborted")(e) &&
        (e as CommandError).result?.exitCode === 1 &&
        (e as CommandError).result?.stdout.endsWith("rolled back") === true,
    );
  });

  it("runs nothing when the signal is already aborted", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-run-"));
    const marker = join(dir, "ran");
    await assert.rejects(
      runCommand(node, ["-e", `require('fs').writeFileSync(${JSON.stringify(marker)}, '')`], {
        timeoutMs: 10_000,
        signal: AbortSignal.abort(),
      }),
      isKind("aborted"),
    );
    assert.equal(existsSync(marker), false);
  });

  it("kills a program that prints past the output bound", async () => {
    await assert.rejects(
      runCommand(node, ["-e", "for (;;) process.stdout.write('x'.repeat(65536))"], {
        timeoutMs: 10_000,
        maxOutputBytes: 100_000,
      }),
      (e: unknown) => isKind("output-limit")(e) && (e as CommandError).result !== undefined,
    );
  });

  it("streams stderr lines split at \\r as well as \\n, as they arrive", async () => {
    const lines: string[] = [];
    const r = await runCommand(
      node,
      [
        "-e",
        "const w = (s) => process.stderr.write(s); w('\\rMigration: [  0 %]'); setTimeout(() => { w('\\rMigration: [ 50 %]'); setTimeout(() => w('\\rMigration: [100 %]\\n'), 20) }, 20)",
      ],
      { timeoutMs: 10_000, onStderrLine: (l) => lines.push(l) },
    );
    assert.equal(r.exitCode, 0);
    assert.deepEqual(lines, ["", "Migration: [  0 %]", "Migration: [ 50 %]", "Migration: [100 %]"]);
  });
});

describe("createLocalRunner (the storage drivers' runner, on the same startCommand)", () => {
  /** True once `pid` has ended (gone, or a zombie nobody reaped yet). */
  const ended = (pid: number) => {
    try {
      return readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.startsWith("Z") === true;
    } catch {
      return true;
    }
  };

  it("feeds stdin through to the program and collects what it prints", async () => {
    const cmd = createLocalRunner().start({
      file: node,
      args: ["-e", "process.stdin.pipe(process.stdout)"],
      timeoutMs: 10_000,
    });
    cmd.stdin.end("snapshot stream");
    const out = await runStorageCommand(
      { start: () => cmd },
      { file: node, args: [], timeoutMs: 10_000 },
    );
    assert.equal(out.code, 0);
    assert.equal(out.stdout, "snapshot stream");
  });

  it("kills the helpers a command started too (its process group) when its time runs out", async () => {
    // A shell, not node: it starts its helper and prints within a few ms, where a node command
    // that starts a node helper once took over 500 ms on a loaded machine and was killed before
    // it had written anything (and node processes have taken 2.9 s to start in CI).
    const cmd = createLocalRunner().start({
      file: "/bin/sh",
      args: ["-c", "sleep 600 </dev/null >/dev/null 2>&1 & echo $!; wait"],
      timeoutMs: 3000,
    });
    const helper = await new Promise<number>((resolve, reject) => {
      cmd.stdout.once("data", (d: Buffer) => resolve(Number.parseInt(d.toString(), 10)));
      cmd.stdout.once("end", () =>
        reject(new Error("the command ended before printing its helper")),
      );
    });
    cmd.stdout.resume();
    assert.equal(ended(helper), false);
    const exit = await cmd.exit;
    assert.equal(exit.timedOut, true);
    const deadline = Date.now() + 5000;
    while (!ended(helper) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const gone = ended(helper);
    if (!gone) process.kill(helper, "SIGKILL");
    assert.ok(gone, "the helper outlived its command");
  });
});

describe("LineSplitter", () => {
  it("treats \\r\\n split across two chunks as one line end", () => {
    const lines: string[] = [];
    const s = new LineSplitter((l) => lines.push(l));
    s.push("one\r");
    s.push("\ntwo\rthree");
    s.push("\n\n");
    s.push("tail");
    s.end();
    assert.deepEqual(lines, ["one", "two", "three", "", "tail"]);
  });

  it("keeps going when a listener throws", () => {
    const lines: string[] = [];
    const s = new LineSplitter((l) => {
      lines.push(l);
      throw new Error("listener bug");
    });
    s.push("a\nb\n");
    assert.deepEqual(lines, ["a", "b"]);
  });
});
