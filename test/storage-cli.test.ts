import assert from "node:assert/strict";
import { chmodSync, existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { RpcError } from "../src/core/index.js";
import {
  createLocalRunner,
  createRbdDriver,
  createZfsDriver,
  runStorageCommand as runCommand,
} from "../src/drivers/index.js";
import { parseConfig } from "../src/server/index.js";
import { createReplay, loadTranscript } from "./helpers/recorded-runner.js";
import { RBD_DISK, ZFS_DISK } from "./helpers/storage-conformance.js";

const signal = new AbortController().signal;
const fixtures = new URL("../../test/fixtures/storage/", import.meta.url);
const fails = (reason: string, cause?: RegExp) => (e: unknown) =>
  e instanceof RpcError &&
  e.reason === reason &&
  (cause === undefined || cause.test(String((e.cause as Error | undefined)?.message)));

/** An executable Node script standing in for a CLI. */
function fakeCli(body: string): string {
  const file = join(mkdtempSync(join(tmpdir(), "dv-cli-")), "cli");
  writeFileSync(file, `#!${process.execPath}\n${body}\n`);
  chmodSync(file, 0o755);
  return file;
}

describe("running storage commands", () => {
  it("passes arguments as an array: nothing is interpreted by a shell", async () => {
    const marker = join(tmpdir(), `dv-shell-${process.pid}`);
    const args = [
      "-e",
      "console.log(JSON.stringify(process.argv.slice(1)))",
      `$(touch ${marker})`,
      "a;b",
      "`id`",
    ];
    const out = await runCommand(createLocalRunner(), {
      file: process.execPath,
      args,
      timeoutMs: 10_000,
    });
    assert.equal(out.code, 0);
    assert.deepEqual(JSON.parse(out.stdout), args.slice(2));
    assert.equal(existsSync(marker), false);
  });

  it("kills a command at its timeout and reports it as STORAGE_UNAVAILABLE", async () => {
    const zfs = createZfsDriver({
      command: fakeCli("setTimeout(() => {}, 60_000);"),
      timeoutMs: 300,
    });
    const t0 = Date.now();
    await assert.rejects(
      zfs.listSnapshots(ZFS_DISK, signal),
      fails("STORAGE_UNAVAILABLE", /timed out after 300 ms/),
    );
    assert.ok(Date.now() - t0 < 5000);
  });

  it("answers STORAGE_UNAVAILABLE, never a crash, when the program is not installed", async () => {
    const rbd = createRbdDriver({ command: "/nonexistent/rbd" });
    await assert.rejects(
      rbd.listSnapshots(RBD_DISK, signal),
      fails("STORAGE_UNAVAILABLE", /could not start/),
    );
  });

  it("stops a command when the caller aborts", async () => {
    const abort = new AbortController();
    const zfs = createZfsDriver({ command: fakeCli("setTimeout(() => {}, 60_000);") });
    const call = zfs.listSnapshots(ZFS_DISK, abort.signal);
    setTimeout(() => abort.abort(), 100);
    await assert.rejects(call, fails("CANCELLED"));
  });

  it("never runs a command meant for another node's copy on this host", async () => {
    const zfs = createZfsDriver({ command: fakeCli("process.exit(99);"), localNode: "node-01" });
    await assert.rejects(
      zfs.listSnapshots(ZFS_DISK, signal, "node-02"),
      fails("STORAGE_UNSUPPORTED"),
    );
    await assert.rejects(
      zfs.sendSnapshot({
        dataset: ZFS_DISK,
        fromNode: "node-01",
        toNode: "node-01",
        snapshot: "s-20261122T000000Z",
        signal,
      }),
      fails("INVALID_ARGUMENT"),
    );
    await assert.rejects(
      zfs.listSnapshots(ZFS_DISK, signal, "node-01"),
      fails("STORAGE_UNAVAILABLE"),
      "its own node runs here",
    );
    assert.throws(
      () => parseConfig({ storage: { zfs: { enabled: true } } }),
      /storage\.zfs\.localNode/,
    );
  });

  it("treats output it does not understand as STORAGE_UNAVAILABLE", async () => {
    const zfs = createZfsDriver({ command: fakeCli('console.log("NAME USED AVAIL");') });
    await assert.rejects(
      zfs.listSnapshots(ZFS_DISK, signal),
      fails("STORAGE_UNAVAILABLE", /unexpected output/),
    );
    const rbd = createRbdDriver({ command: fakeCli('console.log("{not json");') });
    await assert.rejects(
      rbd.listSnapshots(RBD_DISK, signal),
      fails("STORAGE_UNAVAILABLE", /unexpected output/),
    );
  });

  it("runs rbd with the configured Ceph identity before the subcommand, in UTC", async () => {
    const expected = ["--id", "debvisor", "snap", "ls", "--format", "json", "rbd/vm-200-disk0"];
    const rbd = createRbdDriver({
      command: fakeCli(
        `if (process.env.TZ !== "UTC" || JSON.stringify(process.argv.slice(2)) !== ${JSON.stringify(JSON.stringify(expected))}) process.exit(22);
         console.log(JSON.stringify([{ id: 1, name: "s-20261122T000000Z", size: 1, protected: "false", timestamp: "Sun Nov  1 09:08:07 2026" }]));`,
      ),
      globalArgs: ["--id", "debvisor"],
    });
    const snaps = await rbd.listSnapshots(RBD_DISK, signal);
    assert.equal(snaps?.[0]?.created?.seconds, BigInt(Date.parse("2026-11-01T09:08:07Z") / 1000));
  });
});

describe("zfs send through the driver", () => {
  it("holds a send to its bandwidth limit and reports progress against the estimate", async () => {
    const replay = createReplay(loadTranscript(new URL("zfs.txt", fixtures), "bwlimit"));
    const zfs = createZfsDriver({ runnerFor: replay.runnerFor });
    const progress: [number, number][] = [];
    const t0 = performance.now();
    const sent = await zfs.sendSnapshot({
      dataset: ZFS_DISK,
      fromNode: "node-01",
      toNode: "node-02",
      snapshot: "repl-j1-20261122T140502Z",
      bandwidthLimit: 4 * 1024 * 1024,
      signal,
      onProgress: (bytes, expected) => progress.push([bytes, expected]),
    });
    const elapsed = performance.now() - t0;
    replay.assertDone();
    assert.equal(sent.bytes, 1024 * 1024);
    assert.ok(elapsed >= 200, `1 MiB at 4 MiB/s took only ${elapsed} ms`);
    assert.deepEqual(progress.at(-1), [1024 * 1024, 1024 * 1024]);
  });
});
