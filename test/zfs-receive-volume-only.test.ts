// What a replication source sends is another node's: a stolen node
// certificate uploads any `zfs send` stream, e.g. a `-p`/`-R` stream of a
// filesystem with mountpoint=/root/.ssh, canmount=on, sharenfs=... . The
// target's `zfs receive -u` records those properties and defers the mount
// to its next `zfs mount -a`, which would mount the sender's files over its
// own. A full receive is kept only when it made a volume (a VM disk); any
// other is destroyed at once and the receive refused. (`-x mountpoint` and
// the like cannot be passed instead: zfs refuses them for a volume's stream.)
// The clean-up fails closed: the stream's holds are not taken (-h; a held
// snapshot cannot be destroyed) and a cancel arriving as the receive ends
// does not stop it; a zfs without `receive -h` (before OpenZFS 2.0) fails
// every receive as unsupported, saying so, not as "retry later". Found by
// adversarial reviews. Fake `zfs` programs record
// each call or keep the target's state in files.
import assert from "node:assert/strict";
import { chmodSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { RpcError } from "../src/core/index.js";
import { createLocalRunner, createZfsDriver } from "../src/drivers/index.js";
import { DatasetRefSchema, StorageBackend } from "../src/gen/debvisor/v1/storage_pb.js";

/** A `zfs` that logs each call's arguments, swallows its stdin, and says `type` for `zfs get type`. */
function fakeZfs(type: string, options: { getFails?: boolean } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "dv-zfs-recv-"));
  const log = join(dir, "calls");
  const file = join(dir, "zfs");
  writeFileSync(
    file,
    `#!/bin/sh\necho "$*" >> '${log}'\ncase "$1" in\n  receive) cat > /dev/null ;;\n  get) ${options.getFails === true ? "echo 'internal error: out of memory' >&2; exit 1" : `echo ${type}`} ;;\nesac\nexit 0\n`,
  );
  chmodSync(file, 0o755);
  return {
    zfs: createZfsDriver({ command: file, localNode: "node-02", timeoutMs: 10_000 }),
    calls: () => readFileSync(log, "utf8").trim().split("\n"),
  };
}

/** A `zfs` on the target whose received stream is a `-R -h` package of a filesystem with a held snapshot. */
function targetZfs() {
  const dir = mkdtempSync(join(tmpdir(), "dv-zfs-held-"));
  const file = join(dir, "zfs");
  writeFileSync(
    file,
    `#!/bin/sh
d='${dir}'
case "$1" in
  receive)
    cat > /dev/null
    touch "$d/exists"
    case " $* " in *" -h "*) ;; *) touch "$d/held" ;; esac ;;
  get) [ -e "$d/exists" ] && echo filesystem || { echo "cannot open: dataset does not exist" >&2; exit 1; } ;;
  release) rm -f "$d/held" ;;
  destroy)
    if [ -e "$d/held" ]; then echo "cannot destroy snapshot tank/vm-web-01-disk0@s: dataset is busy" >&2; exit 1; fi
    rm -f "$d/exists" ;;
esac
exit 0
`,
  );
  chmodSync(file, 0o755);
  return { file, left: () => existsSync(join(dir, "exists")) };
}

/** A zfs 0.8 `zfs`: receive knows -F -n -s -u -v -d -e, not -h. */
function zfs08() {
  const dir = mkdtempSync(join(tmpdir(), "dv-zfs08-"));
  const file = join(dir, "zfs");
  writeFileSync(
    file,
    `#!/bin/sh
case "$1" in
  receive)
    case " $* " in *" -h "*)
      echo "invalid option 'h'" >&2
      echo "usage:" >&2
      echo "	receive [-vnsFu] [-o <property>=<value>] ... [-x <property>] ... <filesystem|volume|snapshot>" >&2
      echo "	receive [-vnsFu] [-o <property>=<value>] ... [-x <property>] ... [-d | -e] <filesystem>" >&2
      echo "	receive -A <filesystem|volume>" >&2
      echo "" >&2
      echo "For the property list, run: zfs set|get" >&2
      echo "" >&2
      echo "For the delegated permission list, run: zfs allow|unallow" >&2
      exit 2 ;;
    esac
    cat > /dev/null ;;
  get) echo volume ;;
esac
exit 0
`,
  );
  chmodSync(file, 0o755);
  return createZfsDriver({ command: file, localNode: "node-02", timeoutMs: 10_000 });
}

const dataset = create(DatasetRefSchema, {
  backend: StorageBackend.BACKEND_ZFS,
  pool: "tank",
  name: "vm-web-01-disk0",
});
const receive = (zfs: ReturnType<typeof fakeZfs>["zfs"], base?: string) =>
  zfs.receiveStream({
    dataset,
    nodeId: "node-02",
    base,
    stream: Readable.from([Buffer.from("a send stream")]),
    signal: new AbortController().signal,
  });

describe("zfs receive of a stream another node sent", () => {
  it("destroys and refuses a full stream that made a filesystem", async () => {
    const { zfs, calls } = fakeZfs("filesystem");
    await assert.rejects(
      receive(zfs),
      (e: unknown) =>
        e instanceof RpcError &&
        e.reason === "REPLICATION_STREAM_REFUSED" &&
        /made a filesystem, not a volume: destroyed/.test(e.message),
    );
    assert.deepEqual(calls(), [
      "receive -u -h tank/vm-web-01-disk0",
      "get -H -o value type tank/vm-web-01-disk0",
      "destroy -R tank/vm-web-01-disk0",
    ]);
  });

  it("destroys a full stream whose type it cannot read, and fails the run as one to retry", async () => {
    const { zfs, calls } = fakeZfs("volume", { getFails: true });
    await assert.rejects(
      receive(zfs),
      (e: unknown) =>
        e instanceof RpcError &&
        e.reason === "STORAGE_UNAVAILABLE" &&
        /destroyed to be safe; the next run sends it again/.test(e.message),
    );
    assert.deepEqual(calls(), [
      "receive -u -h tank/vm-web-01-disk0",
      "get -H -o value type tank/vm-web-01-disk0",
      "destroy -R tank/vm-web-01-disk0",
    ]);
  });

  it("keeps a full stream that made a volume, and an incremental one onto the volume it has", async () => {
    const { zfs, calls } = fakeZfs("volume");
    assert.equal((await receive(zfs)).bytes, 13);
    await receive(zfs, "repl-j1-20261122T140502Z");
    assert.deepEqual(calls(), [
      "receive -u -h tank/vm-web-01-disk0",
      "get -H -o value type tank/vm-web-01-disk0",
      "receive -u -h -F tank/vm-web-01-disk0",
    ]);
  });
});

describe("a full receive that made a filesystem does not stay, whatever the stream or the call does", () => {
  it("a held snapshot in the stream (zfs send -R -h) does not keep the filesystem", async () => {
    const t = targetZfs();
    const zfs = createZfsDriver({ command: t.file, localNode: "node-02", timeoutMs: 10_000 });
    await assert.rejects(
      zfs.receiveStream({
        dataset,
        nodeId: "node-02",
        stream: Readable.from([Buffer.from("a -R -h package stream")]),
        signal: new AbortController().signal,
      }),
    );
    assert.equal(
      t.left(),
      false,
      "the sender's filesystem stays on the target (destroy -r refused: its snapshot is held)",
    );
  });

  it("a cancel arriving as the receive completes does not keep the filesystem", async () => {
    const t = targetZfs();
    const cancel = new AbortController();
    const local = createLocalRunner();
    const zfs = createZfsDriver({
      command: t.file,
      localNode: "node-02",
      timeoutMs: 10_000,
      // The control plane cancels the operation just as zfs receive exits 0.
      runnerFor: () => ({
        start(spec) {
          const cmd = local.start(spec);
          if (spec.args[0] !== "receive") return cmd;
          return {
            ...cmd,
            exit: cmd.exit.then((e) => {
              cancel.abort();
              return e;
            }),
          };
        },
      }),
    });
    await assert.rejects(
      zfs.receiveStream({
        dataset,
        nodeId: "node-02",
        stream: Readable.from([Buffer.from("a volume? no: a filesystem")]),
        signal: cancel.signal,
      }),
    );
    assert.equal(
      t.left(),
      false,
      "the sender's filesystem stays on the target (the type check ran with the aborted signal)",
    );
  });
});

describe("a target node whose zfs has no `receive -h` (ZoL 0.8)", () => {
  for (const base of [undefined, "repl-j1-20261122T140502Z"]) {
    it(`fails a ${base === undefined ? "full" : "incremental"} receive for a named, permanent reason`, async () => {
      const zfs = zfs08();
      let caught: unknown;
      try {
        await zfs.receiveStream({
          dataset,
          nodeId: "node-02",
          base,
          stream: Readable.from([Buffer.from("a volume's send stream")]),
          signal: new AbortController().signal,
        });
      } catch (e) {
        caught = e;
      }
      assert.ok(caught instanceof RpcError);
      assert.notEqual(
        caught.reason,
        "STORAGE_UNAVAILABLE",
        `a permanent incompatibility reported as "${caught.clientMessage}" (STORAGE_UNAVAILABLE, retry later): every run of every job to this node fails, forever, for a reason no client sees`,
      );
      assert.match(caught.clientMessage, /-h|zfs version|hold/i);
    });
  }
});
