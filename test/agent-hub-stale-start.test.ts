// A start queued for a node while it was away, decided under a generation
// the VM's placement has left since, is never sent to the node's agent when
// it comes back: it ends STALE_GENERATION at the hub (the chaos test's seed
// 105: such a start ran under the old generation and let a late recover
// elsewhere take the disks). Through the hub's own copy of the VM records.
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { silentLogger } from "../src/core/index.js";
import { OperationPhase } from "../src/gen/debvisor/store/v1/agent_records_pb.js";
import { VmRecordSchema } from "../src/gen/debvisor/store/v1/records_pb.js";
import { OperationKind, OperationOutcome } from "../src/gen/debvisor/v1/agent_pb.js";
import { createSqliteStore, encodeMessage } from "../src/store/index.js";
import { connectInProcess, hubOn } from "./helpers/agent-stream.js";
import { eventually } from "./helpers/eventually.js";

describe("a start queued under a generation the VM has left", () => {
  const store = createSqliteStore({
    path: join(mkdtempSync(join(tmpdir(), "dv-hub-stale-")), "state.db"),
    logger: silentLogger,
  });
  const { hub, ...hubs } = hubOn(store);
  after(async () => {
    hubs.close();
    await store.close();
  });

  it("is not sent when the node comes back, and ends STALE_GENERATION; one under the current generation is", async () => {
    const placed = create(VmRecordSchema, { id: "vm-1", nodeId: "n1", generation: 7n });
    await store.put("vms/vm-1", encodeMessage(VmRecordSchema, placed));
    // The hub's copy of the records (a watch) has it.
    await eventually(
      async () => (await hubs.inventory.vmRecords.all()).get("vm-1")?.rec.generation === 7n,
    );
    const start = (operationId: string, generation: bigint) =>
      hub.operations.submit(
        "n1",
        { operationId, kind: OperationKind.START_VM, vmId: "vm-1", params: {}, generation },
        "test",
      );
    // Written while n1 had no stream.
    await start("start-old", 6n);
    await start("start-now", 7n);
    const agent = connectInProcess(hub, "n1", ["op:start-vm"]);
    const dispatched = () =>
      agent.received.flatMap((m) => (m.kind.case === "dispatch" ? [m.kind.value.operationId] : []));
    await eventually(() => dispatched().includes("start-now"));
    const old = await eventually(async () => {
      const r = await hub.operations.get("n1", "start-old");
      assert.equal(r?.phase, OperationPhase.DONE);
      return r;
    });
    assert.equal(old?.result?.outcome, OperationOutcome.FAILED);
    assert.equal(old?.result?.reason, "STALE_GENERATION");
    assert.deepEqual(dispatched(), ["start-now"]);
    await agent.close();
  });
});
