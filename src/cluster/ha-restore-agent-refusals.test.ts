import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import {
  answerDispatches,
  connectInProcess,
  executorsOnHub,
} from "../../test/helpers/agent-stream.js";
import { eventually } from "../../test/helpers/eventually.js";
import { silentLogger } from "../core/index.js";
import { FailoverRecordSchema, VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { OperationKind, OperationOutcome } from "../gen/debvisor/v1/agent_pb.js";
import { VmInfoSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { encodeMessage, getMessage } from "../store/index.js";
import { createFailoverDecisions } from "./failover-decisions.js";
import { createHaRestore, noteSelfFenced } from "./ha-restore.js";

// A node back from a self-fence refuses an HA VM's start until its lease is
// confirmed again (FENCED), and any node refuses a start under a generation
// older than the one its disks are locked under (STALE_GENERATION): in both
// nothing ran, so it is no crash loop and must not use up the VM's restarts.
// Through an agent's stream both arrived as BACKEND_FAILED and were counted:
// three refusals of a node slow to be leased again left the HA VM down.
describe("HA restore's restart limit, with the node's agent refusing the start", () => {
  const { store, hub, executors, close } = executorsOnHub();
  after(close);

  /** `vmId` placed on `node` (generation 4) and stopped there by its fence; `node`'s agent connected. */
  async function fencedOnConnectedNode(node: string, vmId: string) {
    await store.put(
      `vms/${vmId}`,
      encodeMessage(
        VmRecordSchema,
        create(VmRecordSchema, { id: vmId, nodeId: node, managed: true, generation: 4n }),
      ),
    );
    assert.equal(await noteSelfFenced(store, node, vmId, 0), true);
    const agent = connectInProcess(hub, node, ["op:start-vm"]);
    await eventually(() => hub.connectedNodes().includes(node));
    return agent;
  }

  for (const reason of ["FENCED", "STALE_GENERATION"] as const) {
    it(`does not count ${reason} refusals: the vm is started once its node takes the start`, async () => {
      const node = `n-${reason.toLowerCase().replaceAll("_", "-")}`;
      const vmId = `vm-${node}`;
      const agent = await fencedOnConnectedNode(node, vmId);
      // Four refusals, one more than the default restart limit, then the start runs.
      let refusals = 4;
      const starts: bigint[] = [];
      const answering = answerDispatches(agent, (d) => {
        assert.equal(d.kind, OperationKind.START_VM);
        if (refusals-- > 0) return { outcome: OperationOutcome.FAILED, reason };
        starts.push(d.generation);
        return { outcome: OperationOutcome.SUCCEEDED };
      });
      const decisions: string[] = [];
      const ha = createHaRestore({
        store,
        executors,
        elected: () => ({ key: "controllers/failover", modRevision: 0 }),
        restartLimit: 3,
        restartWindowMs: 3_600_000,
        decide: (d) => decisions.push(d.action),
      });
      try {
        const stopped = create(VmInfoSchema, { id: vmId, state: VmState.STOPPED });
        for (let pass = 0; pass < 8 && starts.length === 0; pass++)
          await ha.restore(
            { nodeId: node, reportMs: 1 },
            stopped,
            1_000 + pass,
            AbortSignal.timeout(20_000),
          );
        assert.deepEqual(starts, [4n], `decisions: ${decisions.join(", ")}`);
        assert.deepEqual(decisions, ["failed", "failed", "failed", "failed", "restarted"]);
        const rec = (await getMessage(store, FailoverRecordSchema, `failover/${vmId}`))?.message;
        assert.deepEqual([rec?.restarts, rec?.lostRunning], [1, false]);
      } finally {
        ha.close();
        await answering.stop();
        await agent.close();
      }
    });
  }

  // Not counted, such a refusal is tried again at every pass for as long as the node answers
  // it. A node (a stolen node certificate) that words each refusal anew made every pass a new
  // decision: logged, audited and counted every 2 s per HA VM, without end.
  it("tells a refusal repeated pass after pass once, however the node words it", async () => {
    const node = "n-wordy";
    const vmId = `vm-${node}`;
    const agent = await fencedOnConnectedNode(node, vmId);
    let n = 0;
    const answering = answerDispatches(agent, () => ({
      outcome: OperationOutcome.FAILED,
      reason: "STALE_GENERATION",
      message: `refusal number ${n++}`,
    }));
    const audited: string[] = [];
    const decisions = createFailoverDecisions({
      logger: silentLogger,
      onDecision: (d) => {
        audited.push(`${d.action}: ${d.detail}`);
      },
    });
    const ha = createHaRestore({
      store,
      executors,
      elected: () => ({ key: "controllers/failover", modRevision: 0 }),
      restartLimit: 3,
      restartWindowMs: 3_600_000,
      decide: (d) => decisions.decide(d),
    });
    try {
      const stopped = create(VmInfoSchema, { id: vmId, state: VmState.STOPPED });
      for (let pass = 0; pass < 10; pass++)
        await ha.restore(
          { nodeId: node, reportMs: 1 },
          stopped,
          1_000 + pass,
          AbortSignal.timeout(20_000),
        );
      assert.equal(n, 10, "each pass tried the start");
      assert.deepEqual(audited, [
        `failed: not started on ${node} (STALE_GENERATION); tried again at a later pass`,
      ]);
    } finally {
      ha.close();
      await answering.stop();
      await agent.close();
    }
  });
});
