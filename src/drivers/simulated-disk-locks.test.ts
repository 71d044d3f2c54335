import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { create } from "@bufbuild/protobuf";
import { sharedSimNodes } from "../../test/helpers/shared-sim-nodes.js";
import { RpcError } from "../core/index.js";
import { StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import { VmInfoSchema } from "../gen/debvisor/v1/vm_pb.js";
import { createLocalSimulation } from "./local-simulation.js";
import { lockNamesOf, openSimulatedDiskLocks } from "./simulated-disk-locks.js";

const reasonOf = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    return err instanceof RpcError ? err.reason : String(err);
  }
  return "ok";
};

describe("openSimulatedDiskLocks", () => {
  const vm = create(VmInfoSchema, {
    id: "vm-1",
    ha: true,
    disks: [{ backend: StorageBackend.BACKEND_RBD, pool: "rbd", name: "vm-1-disk0" }],
  });

  it("refuses an older or equal generation of another node, takes a newer one and blocklists the owner", () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-locks-"));
    const locks = openSimulatedDiskLocks(dir);
    const other = openSimulatedDiskLocks(dir);
    try {
      locks.define(vm, "node-a");
      const disk = "rbd:rbd/vm-1-disk0";
      assert.deepEqual(other.lock(disk), { disk, owner: "node-a", generation: 0n });
      let started = 0;
      const start = () => {
        started++;
      };
      const cases: [string, string, bigint, string][] = [
        ["ok-newer-takes", "node-b", 2n, "ok"],
        ["fail-older-other-node", "node-c", 1n, "STALE_GENERATION"],
        ["fail-equal-other-node", "node-c", 2n, "STALE_GENERATION"],
        ["fail-unfenced-other-node", "node-a", 0n, "FENCED"],
        ["ok-owner-again", "node-b", 2n, "ok"],
        ["ok-owner-unfenced", "node-b", 0n, "ok"],
        ["fail-owner-older", "node-b", 1n, "STALE_GENERATION"],
      ];
      let expected = 0;
      for (const [name, node, generation, want] of cases) {
        assert.equal(
          reasonOf(() => other.acquire([disk], node, generation, start)),
          want,
          name,
        );
        if (want === "ok") expected++;
        assert.equal(started, expected, `${name}: the start ran only when the lock was taken`);
      }
      assert.deepEqual(locks.lock(disk), { disk, owner: "node-b", generation: 2n });
      assert.deepEqual(locks.lost([disk], "node-a"), [disk]);
      assert.deepEqual(locks.lost([disk], "node-b"), []);
      const [block] = locks.blocklist();
      assert.equal(block?.node, "node-a");
      assert.equal(block?.by, "node-b");
      assert.equal(block?.generation, 2n);
      assert.equal(locks.definition("vm-1")?.ha, true);
    } finally {
      locks.close();
      other.close();
    }
  });

  it("hands the locks over at a migration's switchover, unless the source was fenced meanwhile", () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-locks-"));
    const locks = openSimulatedDiskLocks(dir);
    try {
      locks.define(vm, "node-a");
      const disk = "rbd:rbd/vm-1-disk0";
      let handed = 0;
      const hand = () => {
        handed++;
      };
      locks.handOver([disk], "node-a", "node-b", 3n, hand);
      assert.deepEqual(locks.lock(disk), { disk, owner: "node-b", generation: 3n });
      assert.deepEqual(locks.lost([disk], "node-b"), [], "the new host keeps the VM running");
      assert.deepEqual(locks.blocklist(), [], "nobody is fenced by a hand-over");
      // A failover took the VM from node-b under generation 4; node-b's late migration fails.
      locks.acquire([disk], "node-c", 4n, () => {});
      assert.equal(
        reasonOf(() => locks.handOver([disk], "node-b", "node-a", 3n, hand)),
        "FENCED",
      );
      assert.equal(
        reasonOf(() => locks.handOver([disk], "node-c", "node-a", 2n, hand)),
        "STALE_GENERATION",
      );
      assert.equal(handed, 1, "only the allowed hand-over committed");
      assert.equal(locks.lock(disk)?.owner, "node-c");
    } finally {
      locks.close();
    }
  });

  it("rolls the lock back when the start it was taken for fails", () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-locks-"));
    const locks = openSimulatedDiskLocks(dir);
    try {
      locks.define(vm, "node-a");
      assert.throws(() =>
        locks.acquire(["rbd:rbd/vm-1-disk0"], "node-b", 5n, () => {
          throw new Error("the domain did not start");
        }),
      );
      assert.equal(locks.lock("rbd:rbd/vm-1-disk0")?.owner, "node-a");
      assert.deepEqual(locks.blocklist(), []);
    } finally {
      locks.close();
    }
  });

  it("serializes processes racing for one disk: starts commit in generation order and never interleave", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-locks-race-"));
    const module = fileURLToPath(new URL("./simulated-disk-locks.js", import.meta.url));
    const world = join(dir, "world.json");
    writeFileSync(world, JSON.stringify({ starts: [] }));
    // Each process takes the lock under its generation; its start is a slow,
    // unprotected read-modify-write of a shared file, safe only if serialized.
    const child = `
      import { readFileSync, writeFileSync } from "node:fs";
      const { openSimulatedDiskLocks } = await import(${JSON.stringify(module)});
      const locks = openSimulatedDiskLocks(${JSON.stringify(dir)});
      const gen = BigInt(process.argv[1]);
      try {
        locks.acquire(["rbd/rbd/race"], "node-" + gen, gen, () => {
          const w = JSON.parse(readFileSync(${JSON.stringify(world)}, "utf8"));
          const until = Date.now() + 20;
          while (Date.now() < until);
          w.starts.push(String(gen));
          writeFileSync(${JSON.stringify(world)}, JSON.stringify(w));
        });
        process.stdout.write("started");
      } catch (err) {
        process.stdout.write(err.reason ?? String(err));
      }`;
    const generations = Array.from({ length: 8 }, (_, i) => i + 1);
    const outcomes = await Promise.all(
      generations.map(
        (g) =>
          new Promise<string>((resolve) => {
            const p = spawn(process.execPath, ["--input-type=module", "-e", child, String(g)]);
            let out = "";
            p.stdout.on("data", (d: Buffer) => {
              out += d.toString();
            });
            p.once("close", () => resolve(out));
          }),
      ),
    );
    const starts = (JSON.parse(readFileSync(world, "utf8")) as { starts: string[] }).starts;
    const succeeded = outcomes.filter((o) => o === "started").length;
    assert.ok(
      outcomes.every((o) => o === "started" || o === "STALE_GENERATION"),
      outcomes.join(","),
    );
    assert.equal(starts.length, succeeded, "no start was lost to an interleaved one");
    const order = starts.map(Number);
    assert.deepEqual(
      order,
      [...order].sort((a, b) => a - b),
      "each start had a newer generation than the one before",
    );
    assert.equal(order.at(-1), 8, "the newest generation always wins");
    const locks = openSimulatedDiskLocks(dir);
    assert.deepEqual(locks.lock("rbd/rbd/race"), {
      disk: "rbd/rbd/race",
      owner: "node-8",
      generation: 8n,
    });
    locks.close();
  });
});

describe("createLocalSimulation with shared storage", () => {
  it("a node whose disk lock another node took stops the domain at its next call, and a stale recover starts nothing", async () => {
    const root = mkdtempSync(join(tmpdir(), "dv-shared-"));
    const shared = join(root, "shared-storage");
    const sig = AbortSignal.timeout(10_000);
    const a = createLocalSimulation({
      nodeId: "node-a",
      dir: join(root, "a"),
      vms: 1,
      now: 0,
      sharedDir: shared,
    });
    const b = createLocalSimulation({
      nodeId: "node-b",
      dir: join(root, "b"),
      vms: 0,
      now: 0,
      sharedDir: shared,
    });
    const c = createLocalSimulation({
      nodeId: "node-c",
      dir: join(root, "c"),
      vms: 0,
      now: 0,
      sharedDir: shared,
    });
    const [first] = await a.driver.list(sig);
    assert.equal(first?.state, "running");
    const vmId = first?.id ?? "";
    const recoverOn = (sim: typeof b, generation: bigint) => {
      const d = sim.driver as typeof sim.driver & {
        recover(v: string, f: string, s: AbortSignal, o: { generation: bigint }): Promise<void>;
      };
      return d.recover(vmId, "node-a", sig, { generation });
    };
    await recoverOn(b, 2n);
    assert.equal((await b.driver.info(vmId, sig))?.state, "running");
    await assert.rejects(recoverOn(c, 1n), (e: RpcError) => e.reason === "STALE_GENERATION");
    assert.equal(await c.driver.info(vmId, sig), undefined, "not even defined on node-c");
    // node-a comes back: its copy lost its storage and stops at its next call.
    assert.equal((await a.driver.info(vmId, sig))?.state, "stopped");
    await assert.rejects(a.driver.start(vmId, sig), (e: RpcError) => e.reason === "FENCED");
    const log = readFileSync(join(root, "a", "sim-actions.log"), "utf8");
    assert.match(log, new RegExp(`fenced-stop ${vmId}`));
    assert.ok(existsSync(join(shared, "disk-locks.sqlite")));
  });

  it("tells the HA VMs, only those, that another node's start fenced off, and a read-only view tells none", async () => {
    const sig = AbortSignal.timeout(10_000);
    const told: { by: string; vms: readonly string[] }[] = [];
    const nodes = sharedSimNodes();
    const open = (nodeId: string, vms: number, readOnly = false) =>
      nodes.open(nodeId, vms, {
        readOnly,
        onFencedOff: (ids) =>
          told.push({ by: readOnly ? `${nodeId} (read-only)` : nodeId, vms: ids }),
      });
    // Generated domains: odd positions are HA.
    const a = open("node-a", 2);
    const b = open("node-b", 0);
    const listed = await a.driver.list(sig);
    assert.deepEqual(
      listed.map((d) => d.state),
      ["running", "running"],
    );
    const ha = listed[0]?.id ?? "";
    const plain = listed[1]?.id ?? "";
    const recovering = b.driver as typeof b.driver & {
      recover(v: string, f: string, s: AbortSignal, o: { generation: bigint }): Promise<void>;
    };
    for (const id of [ha, plain]) await recovering.recover(id, "node-a", sig, { generation: 5n });
    // `debvisor-agent status` beside the agent shows both stopped, and tells nothing.
    const view = open("node-a", 2, true);
    assert.deepEqual(
      (await view.driver.list(sig)).map((d) => d.state),
      ["stopped", "stopped"],
    );
    assert.deepEqual(told, []);
    // The agent's own call carries the stops out, and tells the HA one, once.
    await a.driver.list(sig);
    await a.driver.list(sig);
    assert.deepEqual(told, [{ by: "node-a", vms: [ha] }]);
    assert.notEqual(plain, ha);
  });

  it("checks the generation when the VM starts, not when the call arrived", async () => {
    const sig = AbortSignal.timeout(10_000);
    const nodes = sharedSimNodes();
    const open = (nodeId: string, vms: number, actionMs: number) =>
      nodes.open(nodeId, vms, { actionMs });
    const a = open("node-a", 1, 0);
    const slow = open("node-c", 0, 400);
    const fast = open("node-b", 0, 0);
    const vmId = (await a.driver.list(sig))[0]?.id ?? "";
    type Recovering = {
      recover(v: string, f: string, s: AbortSignal, o: { generation: bigint }): Promise<void>;
    };
    // The older recover arrives first and is still starting when the newer one lands elsewhere.
    const late = (slow.driver as unknown as Recovering).recover(vmId, "node-a", sig, {
      generation: 1n,
    });
    await (fast.driver as unknown as Recovering).recover(vmId, "node-a", sig, { generation: 2n });
    await assert.rejects(late, (e: RpcError) => e.reason === "STALE_GENERATION");
    assert.equal(await slow.driver.info(vmId, sig), undefined);
    assert.equal((await fast.driver.info(vmId, sig))?.state, "running");
  });

  it("a removed copy frees its node's locks, keeping the generation: the placement's start takes them without blocklisting, a late older start is refused", () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-locks-release-"));
    const locks = openSimulatedDiskLocks(dir);
    try {
      const disk = "rbd:rbd/vm-1-disk0";
      locks.define(
        create(VmInfoSchema, {
          id: "vm-1",
          disks: [{ backend: StorageBackend.BACKEND_RBD, pool: "rbd", name: "vm-1-disk0" }],
        }),
        "node-a",
      );
      locks.acquire([disk], "node-b", 10n, () => {});
      locks.release([disk], "node-c", 11n);
      assert.equal(locks.lock(disk)?.owner, "node-b", "another node's lock is not touched");
      locks.release([disk], "node-b", 11n);
      assert.deepEqual(locks.lock(disk), { disk, owner: "", generation: 11n });
      assert.deepEqual(locks.lost([disk], "node-c"), [], "a free lock fences nobody");
      const blocked = locks.blocklist().length;
      const cases: [string, string, bigint, string][] = [
        ["fail-late-older", "node-b", 10n, "STALE_GENERATION"],
        ["ok-current", "node-c", 11n, "ok"],
      ];
      for (const [name, node, generation, want] of cases)
        assert.equal(
          reasonOf(() => locks.acquire([disk], node, generation, () => {})),
          want,
          name,
        );
      assert.deepEqual(locks.lock(disk), { disk, owner: "node-c", generation: 11n });
      assert.equal(locks.blocklist().length, blocked, "nobody blocklisted for a free lock");
      // An unfenced start does not take a lock freed under a generation (a copy the record
      // does not place); a start under it does; a migration hands a free lock over.
      locks.release([disk], "node-c", 0n);
      assert.equal(
        reasonOf(() => locks.acquire([disk], "node-d", 0n, () => {})),
        "FENCED",
      );
      assert.equal(
        reasonOf(() => locks.acquire([disk], "node-d", 11n, () => {})),
        "ok",
      );
      assert.deepEqual(locks.lock(disk), { disk, owner: "node-d", generation: 11n });
      locks.release([disk], "node-d", 0n);
      locks.handOver([disk], "node-d", "node-a", 0n, () => {});
      assert.deepEqual(locks.lock(disk), { disk, owner: "node-a", generation: 11n });
    } finally {
      locks.close();
    }
  });

  it("a node fenced from the disks stays fenced when their later holder frees them: its copy does not come back running", async () => {
    const root = mkdtempSync(join(tmpdir(), "dv-shared-"));
    const shared = join(root, "shared-storage");
    const sig = AbortSignal.timeout(10_000);
    const open = (nodeId: string, vms: number) =>
      createLocalSimulation({ nodeId, dir: join(root, nodeId), vms, now: 0, sharedDir: shared });
    const a = open("node-a", 1);
    const b = open("node-b", 0);
    const c = open("node-c", 0);
    const vmId = (await a.driver.list(sig))[0]?.id ?? "";
    type Recovering = {
      recover(v: string, f: string, s: AbortSignal, o: { generation: bigint }): Promise<void>;
    };
    // node-a's agent is paused with the VM running (no call); node-b recovers it under 10.
    await (b.driver as unknown as Recovering).recover(vmId, "node-a", sig, { generation: 10n });
    // node-b's copy is removed as stale under 11: it frees its locks.
    const undefineB = b.driver as typeof b.driver & {
      undefine(
        v: string,
        o: { force: boolean; signal: AbortSignal; generation?: bigint },
      ): Promise<void>;
    };
    await undefineB.undefine(vmId, { force: true, signal: sig, generation: 11n });
    const locks = openSimulatedDiskLocks(shared);
    try {
      const disks = lockNamesOf(locks.definition(vmId) ?? assert.fail("no definition"));
      // node-a resumes: its copy lost its storage when node-b took the disks; it stays stopped.
      assert.equal((await a.driver.info(vmId, sig))?.state, "stopped");
      await assert.rejects(a.driver.start(vmId, sig), (e: RpcError) => e.reason === "FENCED");
      assert.deepEqual(
        locks.lost(disks, "node-a"),
        disks,
        "a blocklisted node is fenced from a free lock",
      );
      assert.deepEqual(locks.lost(disks, "node-b"), [], "node-b freed its locks: not fenced");
      assert.equal(
        reasonOf(() => locks.handOver(disks, "node-a", "node-d", 0n, () => {})),
        "FENCED",
        "a blocklisted node hands over nothing",
      );
      // The placement's start under 11 takes the free locks.
      await (c.driver as unknown as Recovering).recover(vmId, "node-a", sig, { generation: 11n });
      assert.equal((await c.driver.info(vmId, sig))?.state, "running");
      assert.equal((await a.driver.info(vmId, sig))?.state, "stopped");
    } finally {
      locks.close();
    }
  });

  it("a stale holder's locks: a start under the placement's newer generation takes them, an unfenced one is refused; undefining the copy frees them", async () => {
    const root = mkdtempSync(join(tmpdir(), "dv-shared-"));
    const shared = join(root, "shared-storage");
    const sig = AbortSignal.timeout(10_000);
    const open = (nodeId: string, vms: number) =>
      createLocalSimulation({ nodeId, dir: join(root, nodeId), vms, now: 0, sharedDir: shared });
    const a = open("node-a", 1);
    const b = open("node-b", 0);
    const c = open("node-c", 0);
    const vmId = (await a.driver.list(sig))[0]?.id ?? "";
    type Recovering = {
      recover(v: string, f: string, s: AbortSignal, o: { generation: bigint }): Promise<void>;
    };
    // node-b recovered it under 10, then node-c under 11 (node-b fenced from its disks).
    await (b.driver as unknown as Recovering).recover(vmId, "node-a", sig, { generation: 10n });
    await (c.driver as unknown as Recovering).recover(vmId, "node-a", sig, { generation: 11n });
    await c.driver.stop(vmId, { force: true, signal: sig });
    // The VM's record now places it on node-b under 12, stopped; node-c holds the locks (11).
    await b.driver.stop(vmId, { force: true, signal: sig });
    await assert.rejects(b.driver.start(vmId, sig), (e: RpcError) => e.reason === "FENCED");
    await b.driver.start(vmId, sig, { generation: 12n });
    assert.equal((await b.driver.info(vmId, sig))?.state, "running");
    await b.driver.stop(vmId, { force: true, signal: sig });
    // node-c's copy is removed as stale under 13 (its locks are node-b's now: untouched).
    const undefine = (sim: typeof a, generation: bigint) => {
      const d = sim.driver as typeof sim.driver & {
        undefine(
          v: string,
          o: { force: boolean; signal: AbortSignal; generation?: bigint },
        ): Promise<void>;
      };
      return d.undefine(vmId, { force: true, signal: sig, generation });
    };
    await undefine(c, 13n);
    const locks = openSimulatedDiskLocks(shared);
    try {
      const [disk] = locks.blocklist().map((x) => x.disk);
      assert.ok(disk !== undefined, "node-c was blocklisted from the disk");
      assert.equal(locks.lock(disk)?.owner, "node-b", "node-c's removal left node-b's lock");
      // node-b's copy is removed under 14: its lock is free, at 14.
      await undefine(b, 14n);
      assert.deepEqual(locks.lock(disk), { disk, owner: "", generation: 14n });
    } finally {
      locks.close();
    }
  });
});
