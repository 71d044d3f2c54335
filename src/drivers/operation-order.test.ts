import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { silentLogger } from "../core/index.js";
import {
  OperationDispatchSchema,
  OperationKind,
  OperationOutcome,
  type OperationResult,
} from "../gen/debvisor/v1/agent_pb.js";
import { createLocalSimulation } from "./local-simulation.js";
import { createOperationExecutor } from "./operation-executor.js";
import { createMemoryJournal } from "./operation-journal.js";

/**
 * Operations on one VM take effect in the order they were dispatched (seen
 * in a 30-minute chaos run: a start and a stop of one VM, delivered together
 * when its agent reconnected, ran side by side; the stop found the VM
 * stopped and SUCCEEDED, then the start ran it). A simulated node whose
 * starts and stops take 150 ms each.
 */
describe("operation order on one VM", () => {
  async function node(journal = createMemoryJournal()) {
    const sim = createLocalSimulation({
      nodeId: "node-a",
      dir: mkdtempSync(join(tmpdir(), "dv-order-")),
      vms: 2,
      actionMs: 150,
      migrationMs: 400,
      now: Date.now(),
    });
    const results = new Map<string, OperationResult>();
    const executor = createOperationExecutor({
      driver: sim.driver,
      journal,
      logger: silentLogger,
      signal: new AbortController().signal,
      send: (m) => {
        if (m.kind?.case === "result") {
          const r = m.kind.value as OperationResult;
          results.set(r.operationId, r);
        }
      },
    });
    const vms = (await sim.driver.list(AbortSignal.timeout(5000))).map((d) => d.id);
    const op = (
      id: string,
      kind: OperationKind,
      vmId: string,
      params: Record<string, string> = {},
    ) =>
      executor.dispatch(create(OperationDispatchSchema, { operationId: id, kind, vmId, params }));
    const done = async (...ids: string[]) => {
      // Each takes 150-300 ms; waited for far longer, as a loaded machine may need.
      const until = Date.now() + 20_000;
      while (!ids.every((id) => results.has(id)) && Date.now() < until) await sleep(20);
      return ids.map((id) => results.get(id)?.outcome);
    };
    const state = async (vmId: string) =>
      (await sim.driver.info(vmId, AbortSignal.timeout(5000)))?.state;
    return { sim, op, done, state, vms, executor };
  }

  it("a reboot then a stop dispatched together: the stop holds; a stop then a start: the start holds", async () => {
    const n = await node();
    try {
      const [vm = ""] = n.vms;
      assert.equal(await n.state(vm), "running");
      // The reboot takes twice as long as the stop: side by side, the stop would end first
      // and the reboot's start would leave the VM running.
      n.op("reboot-1", OperationKind.REBOOT_VM, vm);
      n.op("stop-1", OperationKind.STOP_VM, vm);
      assert.deepEqual(await n.done("reboot-1", "stop-1"), [
        OperationOutcome.SUCCEEDED,
        OperationOutcome.SUCCEEDED,
      ]);
      assert.equal(await n.state(vm), "stopped", "the later stop holds");
      n.op("stop-2", OperationKind.STOP_VM, vm);
      n.op("start-2", OperationKind.START_VM, vm);
      await n.done("stop-2", "start-2");
      assert.equal(await n.state(vm), "running", "the later start holds");
    } finally {
      n.sim.close();
    }
  });

  it("a forced stop waits its turn too: a reboot then a forced stop leaves the VM stopped", async () => {
    const n = await node();
    try {
      const [vm = ""] = n.vms;
      n.op("reboot-1", OperationKind.REBOOT_VM, vm);
      n.op("kill-1", OperationKind.STOP_VM, vm, { force: "true" });
      await n.done("reboot-1", "kill-1");
      assert.equal(await n.state(vm), "stopped");
    } finally {
      n.sim.close();
    }
  });

  it("after an agent restart, operations it had begun are settled in order: each is checked only once those ahead of it ran", async () => {
    const journal = createMemoryJournal();
    const n = await node(journal);
    try {
      const [vm = ""] = n.vms;
      n.op("stop-0", OperationKind.STOP_VM, vm, { force: "true" });
      await n.done("stop-0");
      // The agent had begun a start then a stop of the stopped VM when it was killed.
      for (const [id, kind] of [
        ["start-1", OperationKind.START_VM],
        ["stop-1", OperationKind.STOP_VM],
      ] as const)
        journal.begin(create(OperationDispatchSchema, { operationId: id, kind, vmId: vm }));
      await n.executor.recover();
      assert.deepEqual(await n.done("start-1", "stop-1"), [
        OperationOutcome.SUCCEEDED,
        OperationOutcome.SUCCEEDED,
      ]);
      assert.equal(await n.state(vm), "stopped", "the later stop holds");
    } finally {
      n.sim.close();
    }
  });
});
