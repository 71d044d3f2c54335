import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { RpcError, silentLogger } from "../core/index.js";
import { VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { VmInfoSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, encodeMessage } from "../store/index.js";
import { createHaRestore, noteSelfFenced } from "./ha-restore.js";

describe("noteSelfFenced (a node says it stopped an HA vm while cut off)", () => {
  it("marks only a vm placed on that node that nobody asked to stop", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-ha-")), "state.db"),
      logger: silentLogger,
    });
    try {
      const put = (id: string, nodeId: string, desiredState: VmState) =>
        store.put(
          `vms/${id}`,
          encodeMessage(
            VmRecordSchema,
            create(VmRecordSchema, { id, nodeId, managed: true, desiredState }),
          ),
        );
      await put("vm-run", "node-a", VmState.RUNNING);
      await put("vm-stopped", "node-a", VmState.STOPPED);
      await put("vm-elsewhere", "node-b", VmState.RUNNING);
      assert.equal(await noteSelfFenced(store, "node-a", "vm-run"), true);
      // A tenant stopped it: a node's word (or a stolen node certificate's) does not restart it.
      assert.equal(await noteSelfFenced(store, "node-a", "vm-stopped"), false);
      assert.equal(await noteSelfFenced(store, "node-a", "vm-elsewhere"), false);
      assert.equal(await store.get("failover/vm-stopped"), undefined);
    } finally {
      await store.close();
    }
  });
});

describe("HA restore's restart limit", () => {
  it("does not count a start its node refused before anything ran (not leased again yet): the vm comes back once the node is", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-ha-")), "state.db"),
      logger: silentLogger,
    });
    try {
      await store.put(
        "vms/vm-1",
        encodeMessage(VmRecordSchema, create(VmRecordSchema, { id: "vm-1", nodeId: "node-a" })),
      );
      assert.equal(await noteSelfFenced(store, "node-a", "vm-1"), true);
      let refusals = 3;
      let starts = 0;
      const decisions: string[] = [];
      const ha = createHaRestore({
        store,
        executors: {
          forNode: () =>
            ({
              start: async () => {
                if (refusals-- > 0) throw new RpcError("FENCED");
                starts++;
              },
            }) as never,
          destination: () => {
            throw new Error("not used");
          },
        },
        elected: () => ({ key: "controllers/failover", modRevision: 0 }),
        restartLimit: 2,
        restartWindowMs: 3_600_000,
        decide: (d) => decisions.push(d.action),
      });
      const vm = create(VmInfoSchema, { id: "vm-1", state: VmState.STOPPED });
      for (let pass = 0; pass < 6 && starts === 0; pass++)
        await ha.restore("node-a", vm, 1_000 + pass, AbortSignal.timeout(5000));
      ha.close();
      assert.equal(starts, 1, `decisions: ${decisions.join(", ")}`);
      assert.deepEqual(decisions, ["failed", "failed", "failed", "restarted"]);
    } finally {
      await store.close();
    }
  });

  it("never undoes an acknowledged stop: a vm asked to stop after it was marked, even between its read and the decision, is not started", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-ha-")), "state.db"),
      logger: silentLogger,
    });
    try {
      const put = (id: string, desiredState: VmState) =>
        store.put(
          `vms/${id}`,
          encodeMessage(
            VmRecordSchema,
            create(VmRecordSchema, { id, nodeId: "node-a", managed: true, desiredState }),
          ),
        );
      for (const id of ["vm-1", "vm-2"]) {
        await put(id, VmState.RUNNING);
        assert.equal(await noteSelfFenced(store, "node-a", id), true);
      }
      // vm-1: stopped by its tenant before the pass. vm-2: stopped while the pass decides
      // (the stop's write lands just before the controller's transaction).
      await put("vm-1", VmState.STOPPED);
      let racing = true;
      const racingStore: typeof store = Object.create(store, {
        txn: {
          value: async (...args: Parameters<typeof store.txn>) => {
            if (racing) {
              racing = false;
              await put("vm-2", VmState.STOPPED);
            }
            return store.txn(...args);
          },
        },
      });
      const started: string[] = [];
      const ha = createHaRestore({
        store: racingStore,
        executors: {
          forNode: () =>
            ({
              start: async (vmId: string) => {
                started.push(vmId);
              },
            }) as never,
          destination: () => {
            throw new Error("not used");
          },
        },
        elected: () => ({ key: "controllers/failover", modRevision: 0 }),
        restartLimit: 3,
        restartWindowMs: 3_600_000,
        decide: () => {},
      });
      for (let pass = 0; pass < 3; pass++) {
        await ha.restore(
          "node-a",
          create(VmInfoSchema, { id: "vm-2", state: VmState.STOPPED }),
          1_000,
          AbortSignal.timeout(5000),
        );
        await ha.restore(
          "node-a",
          create(VmInfoSchema, { id: "vm-1", state: VmState.STOPPED }),
          1_000,
          AbortSignal.timeout(5000),
        );
      }
      ha.close();
      assert.deepEqual(started, []);
      assert.equal(racing, false, "the racing stop was written");
    } finally {
      await store.close();
    }
  });

  it("gives up on a start its node never answers within the bound, without counting it, and starts it on a later pass", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-ha-")), "state.db"),
      logger: silentLogger,
    });
    // AbortSignal.timeout does not keep a process alive; a daemon has its server for that.
    const alive = setInterval(() => {}, 50);
    try {
      await store.put(
        "vms/vm-1",
        encodeMessage(VmRecordSchema, create(VmRecordSchema, { id: "vm-1", nodeId: "node-a" })),
      );
      assert.equal(await noteSelfFenced(store, "node-a", "vm-1"), true);
      let answers = false;
      const decisions: string[] = [];
      const ha = createHaRestore({
        store,
        executors: {
          forNode: () =>
            ({
              start: (_: string, signal: AbortSignal) =>
                answers
                  ? Promise.resolve()
                  : new Promise((_r, reject) =>
                      signal.addEventListener("abort", () => reject(signal.reason)),
                    ),
            }) as never,
          destination: () => {
            throw new Error("not used");
          },
        },
        elected: () => ({ key: "controllers/failover", modRevision: 0 }),
        restartLimit: 1,
        restartWindowMs: 3_600_000,
        startTimeoutMs: 200,
        decide: (d) => decisions.push(`${d.action}: ${d.detail}`),
      });
      const vm = create(VmInfoSchema, { id: "vm-1", state: VmState.STOPPED });
      await ha.restore("node-a", vm, 1_000, AbortSignal.timeout(10_000));
      assert.match(decisions[0] ?? "", /^failed: node-a did not start vm-1 within 0 s/);
      // Not counted: with a limit of 1, the next pass still starts it.
      answers = true;
      await ha.restore("node-a", vm, 2_000, AbortSignal.timeout(10_000));
      ha.close();
      assert.match(decisions[1] ?? "", /^restarted/);
    } finally {
      clearInterval(alive);
      await store.close();
    }
  });
});

describe("HA restore's start", () => {
  it("carries the generation it was decided under, not the one current when it is sent", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-ha-")), "state.db"),
      logger: silentLogger,
    });
    try {
      const place = (nodeId: string, generation: bigint) =>
        store.put(
          "vms/vm-1",
          encodeMessage(VmRecordSchema, create(VmRecordSchema, { id: "vm-1", nodeId, generation })),
        );
      await place("node-a", 7n);
      assert.equal(await noteSelfFenced(store, "node-a", "vm-1"), true);
      const sent: (bigint | undefined)[] = [];
      const ha = createHaRestore({
        store,
        executors: {
          forNode: () =>
            ({
              start: async (_vmId: string, _signal: AbortSignal, o?: { generation?: bigint }) => {
                sent.push(o?.generation);
              },
            }) as never,
          destination: () => {
            throw new Error("not used");
          },
        },
        elected: () => ({ key: "controllers/failover", modRevision: 0 }),
        restartLimit: 3,
        restartWindowMs: 3_600_000,
        decide: () => {},
      });
      // Sent without one, an agent's start goes under the generation current when it is
      // submitted: had the controller stalled after its decision while the VM was failed
      // over to node-b under 8, node-a's start would take the disks under node-b's token,
      // and node-b's recover would be refused.
      await ha.restore(
        "node-a",
        create(VmInfoSchema, { id: "vm-1", state: VmState.STOPPED }),
        1_000,
        AbortSignal.timeout(5000),
      );
      ha.close();
      assert.deepEqual(sent, [7n]);
    } finally {
      await store.close();
    }
  });
});
