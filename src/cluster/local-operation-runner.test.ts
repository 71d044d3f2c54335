import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { createManualClock, silentLogger } from "../core/index.js";
import { createSimulation, type HypervisorDriver } from "../drivers/index.js";
import {
  OperationPhase,
  OperationRecordSchema,
} from "../gen/debvisor/store/v1/agent_records_pb.js";
import { OperationKind, OperationOutcome } from "../gen/debvisor/v1/agent_pb.js";
import { createSqliteStore, updateMessage } from "../store/index.js";
import { createAgentOperations, operationKey } from "./agent-operations.js";
import { startLocalOperationRunner } from "./local-operation-runner.js";
import { registerRunner } from "./runner-registry.js";

/**
 * A daemon that claimed an operation of a node it drives itself and died
 * (kill -9) leaves it DELIVERED under its runner id. Its successor (or
 * another replica) adopts it once that id's lease is gone, settled from the
 * hypervisor: never lost, never run twice.
 */
describe("the local operation runner after the process that claimed an operation died", () => {
  const clock = createManualClock(Date.UTC(2026, 11, 2));
  const dir = mkdtempSync(join(tmpdir(), "dv-local-runner-"));
  const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
  const sim = createSimulation({ nodes: 1, vmsPerNode: 3, clock });
  const node = sim.nodes[0]?.id?.id ?? "";
  const starts: string[] = [];
  const base = sim.driver(node) as HypervisorDriver;
  const driver: HypervisorDriver = {
    ...base,
    start(vmId, signal) {
      starts.push(vmId);
      return base.start(vmId, signal);
    },
  };
  const operations = createAgentOperations(store, clock);
  const closing = new AbortController();
  after(async () => {
    closing.abort();
    sim.close();
    await store.close();
  });

  /** Writes a start of `vmId` as claimed by `runnerId`, the way a runner's claim leaves it. */
  async function claimedBy(runnerId: string, id: string, vmId: string) {
    await operations.submit(
      node,
      { operationId: id, kind: OperationKind.START_VM, vmId, params: {}, generation: 0n },
      "test",
    );
    await updateMessage(store, OperationRecordSchema, operationKey(node, id), (r) =>
      r === undefined
        ? undefined
        : create(OperationRecordSchema, {
            ...r,
            phase: OperationPhase.DELIVERED,
            deliveries: 1,
            deliveredBy: runnerId,
          }),
    );
  }
  const stoppedVms = async () =>
    (await base.list(closing.signal)).filter((d) => d.state !== "running").map((d) => d.id);

  it("settles a dead process's start from the hypervisor, starts only what had not started, and waits for a live one", async () => {
    const [a, b, c] = (await base.list(closing.signal)).map((d) => d.id);
    assert.ok(a && b && c);
    for (const id of [a, b, c]) await base.stop(id, { force: true, signal: closing.signal });
    await base.start(b, closing.signal); // the dead process's start of b had taken effect before it died
    starts.length = 0;
    await claimedBy("r-dead0001", "op-a", a);
    await claimedBy("r-dead0002", "op-b", b);
    // A live process (its lease kept) still runs op-c: nobody takes it from it.
    const live = await registerRunner(store, "r-alive001", 60_000, silentLogger);
    await claimedBy(live.id, "op-c", c);

    const me = await registerRunner(store, "r-me000001", 60_000, silentLogger);
    await startLocalOperationRunner({
      store,
      clock,
      logger: silentLogger,
      nodes: () => [node],
      driver: () => driver,
      servedByAgent: () => false,
      runnerId: me.id,
      isRunnerAlive: (id, s) => me.isAlive(id, s),
      adoptEveryMs: 100,
      signal: closing.signal,
    }).ready;
    const done = async (id: string) => {
      // Bounded at ~15 s (a loaded machine); it ends as soon as the operation is done.
      for (let i = 0; i < 300; i++) {
        const r = await operations.get(node, id);
        if (r?.phase === OperationPhase.DONE) return r;
        await sleep(50);
      }
      return operations.get(node, id);
    };
    const opA = await done("op-a");
    const opB = await done("op-b");
    assert.equal(
      opA?.result?.outcome,
      OperationOutcome.SUCCEEDED,
      "a start that had not acted runs",
    );
    assert.equal(
      opB?.result?.outcome,
      OperationOutcome.SUCCEEDED,
      "a start that had acted is done",
    );
    assert.equal(opA?.deliveredBy, me.id);
    assert.deepEqual(starts, [a], "b, already running, is not started again");
    assert.deepEqual(await stoppedVms(), [c]);

    await sleep(400);
    const opC = await operations.get(node, "op-c");
    assert.equal(opC?.phase, OperationPhase.DELIVERED, "a live process's operation is left to it");
    assert.equal(opC?.deliveredBy, live.id);
    // That process dies (its lease goes): now the operation is adopted, once.
    await live.close();
    assert.equal((await done("op-c"))?.result?.outcome, OperationOutcome.SUCCEEDED);
    assert.deepEqual(starts, [a, c]);
    assert.deepEqual(await stoppedVms(), []);
    await me.close();
  });
});
