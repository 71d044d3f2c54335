import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import {
  createAgentOperations,
  createVmOperations,
  pruneOperations,
  startLocalOperationRunner,
  timestampFromMs,
  VM_OPERATIONS_PREFIX,
  vmOperationId,
} from "../src/cluster/index.js";
import { createManualClock, silentLogger } from "../src/core/index.js";
import {
  createLocalSimulation,
  createOperationExecutor,
  openOperationJournal,
} from "../src/drivers/index.js";
import { OperationPhase } from "../src/gen/debvisor/store/v1/agent_records_pb.js";
import { VmOperationIndexSchema } from "../src/gen/debvisor/store/v1/vm_operation_records_pb.js";
import {
  OperationDispatchSchema,
  OperationKind,
  OperationOutcome,
  OperationProgressSchema,
  type OperationResult,
  OperationResultSchema,
} from "../src/gen/debvisor/v1/agent_pb.js";
import { VmOperationKind } from "../src/gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, encodeMessage, getMessage } from "../src/store/index.js";
import { eventually } from "./helpers/eventually.js";

const HOUR = 3_600_000;

/**
 * A client's request_id names the same lifecycle operation (its id is
 * derived from it) until the operation is removed after its retention;
 * then the same key starts a new operation under the same id. Found by
 * review: the node's agent answered it from its journal of finished
 * operations, reporting the old stop's success while the VM ran on.
 */
/**
 * node-a as its agent runs it: a simulated hypervisor with one VM and the
 * real executor over its durable journal (as agent-runner.ts); `send` gets
 * what the agent would put on its stream.
 */
async function agentNode(
  dir: string,
  actionMs: number,
  send: Parameters<typeof createOperationExecutor>[0]["send"],
  hold?: Promise<void>,
) {
  const sim = createLocalSimulation({
    nodeId: "node-a",
    dir: join(dir, "sim"),
    vms: 1,
    actionMs,
    migrationMs: 50,
    now: Date.now(),
  });
  // With `hold`, every stop waits for it: the test decides when an operation goes on.
  const driver =
    hold === undefined
      ? sim.driver
      : new Proxy(sim.driver, {
          get(target, key) {
            const value = Reflect.get(target, key);
            if (key === "stop")
              return async (...args: Parameters<typeof target.stop>) => {
                await hold;
                return target.stop(...args);
              };
            return typeof value === "function" ? value.bind(target) : value;
          },
        });
  const executor = createOperationExecutor({
    driver,
    journal: openOperationJournal(dir),
    logger: silentLogger,
    signal: new AbortController().signal,
    send,
  });
  const [vm = ""] = (await sim.driver.list(AbortSignal.timeout(5000))).map((d) => d.id);
  const state = async () => (await sim.driver.info(vm, AbortSignal.timeout(5000)))?.state;
  return { sim, executor, vm, state };
}

describe("a request_id used again after its operation's retention", () => {
  it("starts a new operation that the node actually runs (documented), not a replay of the old result", async () => {
    const dir = mkdtempSync(join(tmpdir(), "rev3-replay-"));
    const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    const clock = createManualClock(Date.now());
    const vmOps = createVmOperations(store, clock);
    const agentOps = createAgentOperations(store, clock);
    const results: OperationResult[] = [];
    const { sim, executor, vm, state } = await agentNode(dir, 10, (m) => {
      if (m.kind?.case === "result") results.push(m.kind.value as OperationResult);
    });
    // What the hub does: deliver the dispatch, write the agent's result.
    const run = async (id: string) => {
      const rec = await agentOps.get("node-a", id);
      assert.ok(rec?.dispatch);
      const seen = results.length;
      executor.dispatch(rec.dispatch);
      const answered = () => results.slice(seen).find((r) => r.operationId === id);
      const r = await eventually(() => answered() ?? false, { timeoutMs: 15_000, intervalMs: 10 });
      await agentOps.finish("node-a", r);
      return r;
    };
    const stop = () =>
      vmOps.submit({
        id: vmOperationId(vm, "stop-nightly", undefined),
        kind: VmOperationKind.STOP,
        vmId: vm,
        nodeId: "node-a",
        tenant: "",
        params: { force: "false", timeout_ms: "1000" },
        requestedBy: "t",
        requestId: "stop-nightly",
        vm: undefined,
        vmRevision: 0,
        generation: 0n,
      });
    const settle = async (id: string) => {
      const got = await getMessage(store, VmOperationIndexSchema, VM_OPERATIONS_PREFIX + id);
      assert.ok(got);
      await store.put(
        VM_OPERATIONS_PREFIX + id,
        encodeMessage(
          VmOperationIndexSchema,
          create(VmOperationIndexSchema, { ...got.message, settled: true }),
        ),
      );
    };

    assert.equal(await state(), "running");
    const first = await stop();
    await run(first.operation.id);
    await settle(first.operation.id);
    assert.equal(await state(), "stopped");

    // Later the VM is started again (another call), and the retention passes.
    await sim.driver.start(vm, AbortSignal.timeout(5000), { generation: 0n });
    assert.equal(await state(), "running");
    clock.advance(25 * HOUR);
    assert.equal(await pruneOperations({ store, clock, retentionMs: 24 * HOUR }), 1);

    // The same request_id now "starts a new operation" (docs/cluster.md) ...
    const second = await stop();
    assert.equal(second.written, true, "a new operation was written");
    assert.equal(second.operation.id, first.operation.id, "under the very same id");
    const r = await run(second.operation.id);
    // ... which the node runs: not answered from its journal (SUCCEEDED, the VM still running).
    assert.equal(r.replayed, false, "the node ran the new stop rather than replaying the old one");
    assert.equal(await state(), "stopped");
    // A redelivery of that operation (a reconnect) is still answered from the journal.
    const again = await agentOps.get("node-a", second.operation.id);
    assert.ok(again?.dispatch);
    const before = results.length;
    executor.dispatch(again.dispatch);
    assert.equal(results.length, before + 1);
    assert.equal(results.at(-1)?.replayed, true);
    await store.close();
  });

  it("refuses a new operation under an id whose earlier operation still runs on the node, rather than answering with its outcome", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-retention-inflight-"));
    const results: OperationResult[] = [];
    const { executor, vm, state } = await agentNode(dir, 300, (m) => {
      if (m.kind?.case === "result") results.push(m.kind.value as OperationResult);
    });
    const dispatch = (kind: OperationKind, ms: number) =>
      create(OperationDispatchSchema, {
        operationId: "rq-same",
        kind,
        vmId: vm,
        params: { force: "true", timeout_ms: "1000" },
        createdAt: timestampFromMs(ms),
      });
    executor.dispatch(dispatch(OperationKind.STOP_VM, 1_000_000)); // still running here
    executor.dispatch(dispatch(OperationKind.START_VM, 9_000_000)); // a new one, same id
    await eventually(() => results.length >= 2, { timeoutMs: 15_000, intervalMs: 20 });
    assert.deepEqual(
      results.map((r) => [OperationOutcome[r.outcome], r.reason]),
      [
        ["FAILED", "CONFLICT"],
        ["SUCCEEDED", ""],
      ],
    );
    assert.equal(await state(), "stopped");
  });

  it("does not write an earlier operation's progress or result, arriving late, to a new operation under its id, which then runs", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-retention-late-"));
    const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    const stop = new AbortController();
    try {
      const clock = createManualClock(Date.now());
      const ops = createAgentOperations(store, clock);
      const results: OperationResult[] = [];
      const written: Promise<boolean>[] = [];
      let release = () => {};
      const hold = new Promise<void>((resolve) => {
        release = resolve;
      });
      // As the hub does with what the stream brings: written by the operation's id.
      const { sim, executor, vm } = await agentNode(
        dir,
        400,
        (m) => {
          const kind = m.kind;
          if (kind?.case === "progress")
            void ops.progress("node-a", create(OperationProgressSchema, kind.value));
          if (kind?.case !== "result") return;
          const r = create(OperationResultSchema, kind.value);
          results.push(r);
          written.push(ops.finish("node-a", r));
        },
        hold,
      );
      // A reboot (its progress comes midway too), delivered, still running on the node when
      // the control plane ends its record (as for a node removed) and the retention removes it.
      // Its stop waits for `hold`: the test, not a duration, decides it is still running.
      const old = await ops.submit(
        "node-a",
        {
          operationId: "rq-1",
          kind: OperationKind.REBOOT_VM,
          vmId: vm,
          params: { force: "false", timeout_ms: "5000" },
          generation: 0n,
        },
        "test",
      );
      assert.ok(old.dispatch);
      executor.dispatch(old.dispatch);
      await sleep(50);
      await ops.finish(
        "node-a",
        create(OperationResultSchema, {
          operationId: "rq-1",
          outcome: OperationOutcome.FAILED,
          reason: "OPERATION_INTERRUPTED",
        }),
      );
      clock.advance(25 * HOUR);
      assert.equal(await pruneOperations({ store, clock, retentionMs: 24 * HOUR }), 1);
      // A start under the same id, written, not delivered yet; the reboot then goes on and ends.
      await ops.submit(
        "node-a",
        { operationId: "rq-1", kind: OperationKind.START_VM, vmId: vm, params: {}, generation: 0n },
        "test",
      );
      assert.equal(results.length, 0, "the reboot still runs on the node");
      release();
      await eventually(() => results.length > 0, { timeoutMs: 15_000, intervalMs: 20 });
      assert.equal(results.length, 1, "the reboot finished on the node");
      assert.deepEqual(await Promise.all(written), [false], "its result was not written");
      const rec = await ops.get("node-a", "rq-1");
      assert.equal(rec?.dispatch?.kind, OperationKind.START_VM);
      assert.equal(rec?.phase, OperationPhase.PENDING, "no progress of the reboot written to it");
      // The node's runner then takes the start, and it ends.
      startLocalOperationRunner({
        store,
        clock,
        logger: silentLogger,
        nodes: () => ["node-a"],
        driver: () => sim.driver,
        servedByAgent: () => false,
        runnerId: "runner-test",
        isRunnerAlive: async () => false,
        adoptEveryMs: 50,
        signal: stop.signal,
      });
      const ended = await eventually(
        async () => {
          const now = await ops.get("node-a", "rq-1");
          assert.equal(now?.phase, OperationPhase.DONE, "the start ran");
          return now;
        },
        { timeoutMs: 15_000, intervalMs: 20 },
      );
      assert.equal(ended?.dispatch?.kind, OperationKind.START_VM);
    } finally {
      stop.abort();
      await store.close();
    }
  });
});
