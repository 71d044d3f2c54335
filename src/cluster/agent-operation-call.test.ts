import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import {
  answerDispatches,
  connectInProcess,
  executorsOnHub,
} from "../../test/helpers/agent-stream.js";
import { eventually } from "../../test/helpers/eventually.js";
import { Code, RpcError } from "../core/index.js";
import { OperationOutcome } from "../gen/debvisor/v1/agent_pb.js";

// An agent's refusal reaches whoever asked (the HA restore, a failover, a
// migration) with the agent's reason. FENCED and STALE_GENERATION came back
// as BACKEND_FAILED (INTERNAL): the HA restore then counted a node's "not
// leased again yet" against the VM's restart limit, and the operator read a
// backend failure where the node had said why it started nothing.
describe("an agent's refusal, through its stream and the agent executors", () => {
  const { hub, executors, close } = executorsOnHub();
  after(close);

  for (const [reason, message] of [
    ["FENCED", "no confirmed lease renewal within the self-fence window; not started"],
    ["STALE_GENERATION", "vm placed elsewhere since the operation was issued; not started"],
  ] as const) {
    it(`reaches the caller as ${reason} (FAILED_PRECONDITION), with the agent's message, not as a backend failure`, async () => {
      const node = `n-${reason.toLowerCase().replaceAll("_", "-")}`;
      const agent = connectInProcess(hub, node, ["op:start-vm"]);
      await eventually(() => hub.connectedNodes().includes(node));
      const answering = answerDispatches(agent, () => ({
        outcome: OperationOutcome.FAILED,
        reason,
        message,
      }));
      try {
        const driver = executors.forNode(node) ?? assert.fail("no driver");
        await assert.rejects(
          driver.start("vm-1", AbortSignal.timeout(15_000), { generation: 3n }),
          (err: unknown) => {
            assert.ok(err instanceof RpcError, String(err));
            assert.deepEqual(
              [err.reason, err.code, err.clientMessage],
              [reason, Code.FailedPrecondition, message],
            );
            return true;
          },
        );
      } finally {
        await answering.stop();
        await agent.close();
      }
    });
  }
});
