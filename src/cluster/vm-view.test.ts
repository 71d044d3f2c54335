import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { NodeReadiness, NodeSummarySchema } from "../gen/debvisor/v1/node_pb.js";
import { VmInfoSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { observedVm, observedVms } from "./vm-view.js";

const vm = (state: VmState, node = "n1") =>
  create(VmInfoSchema, { id: "vm-1", state, nodeId: { id: node } });
const node = (readiness: NodeReadiness, notReadyForMs = 0) =>
  create(NodeSummarySchema, {
    info: { id: { id: "n1" } },
    readiness,
    notReadyForMs: BigInt(notReadyForMs),
  });
const FENCE = 60_000;

describe("observedVm", () => {
  for (const [name, v, n, fence, want] of [
    [
      "ok-ready-node-as-reported",
      vm(VmState.RUNNING),
      node(NodeReadiness.READY),
      FENCE,
      VmState.RUNNING,
    ],
    [
      "ok-not-ready-is-unknown",
      vm(VmState.RUNNING),
      node(NodeReadiness.NOT_READY, 5_000),
      FENCE,
      VmState.UNKNOWN,
    ],
    [
      "ok-paused-on-down-node-is-unknown",
      vm(VmState.PAUSED),
      node(NodeReadiness.NOT_READY, 5_000),
      FENCE,
      VmState.UNKNOWN,
    ],
    [
      "ok-fenced-is-stopped",
      vm(VmState.RUNNING),
      node(NodeReadiness.NOT_READY, FENCE + 1),
      FENCE,
      VmState.STOPPED,
    ],
    [
      "ok-at-the-fence-delay-still-unknown",
      vm(VmState.RUNNING),
      node(NodeReadiness.NOT_READY, FENCE),
      FENCE,
      VmState.UNKNOWN,
    ],
    [
      "ok-stopped-stays-stopped",
      vm(VmState.STOPPED),
      node(NodeReadiness.NOT_READY, 1),
      FENCE,
      VmState.STOPPED,
    ],
    [
      "ok-no-fence-delay-stays-unknown",
      vm(VmState.RUNNING),
      node(NodeReadiness.NOT_READY, 10 * FENCE),
      undefined,
      VmState.UNKNOWN,
    ],
    ["ok-unknown-node-as-reported", vm(VmState.RUNNING), undefined, FENCE, VmState.RUNNING],
  ] as const)
    it(`${name}: ${VmState[want]}`, () => assert.equal(observedVm(v, n, fence).state, want));

  it("shows a down node's VM placed on another node (a failover whose restart failed) at its placement", () => {
    const fenced = node(NodeReadiness.NOT_READY, FENCE + 1);
    const moved = observedVm(vm(VmState.RUNNING), fenced, FENCE, "n2");
    assert.deepEqual([moved.nodeId?.id, moved.state], ["n2", VmState.STOPPED]);
    const early = observedVm(vm(VmState.RUNNING), node(NodeReadiness.NOT_READY, 1), FENCE, "n2");
    assert.deepEqual([early.nodeId?.id, early.state], ["n2", VmState.UNKNOWN]);
    // Placed where it is reported (in another case), or a READY node's report: as reported.
    assert.equal(observedVm(vm(VmState.RUNNING), fenced, FENCE, "N1").nodeId?.id, "n1");
    const ready = observedVm(vm(VmState.RUNNING), node(NodeReadiness.READY), FENCE, "n2");
    assert.deepEqual([ready.nodeId?.id, ready.state], ["n1", VmState.RUNNING]);
  });

  it("does not change the inventory's own record", () => {
    const v = vm(VmState.RUNNING);
    observedVm(v, node(NodeReadiness.NOT_READY, 1), FENCE);
    assert.equal(v.state, VmState.RUNNING);
  });

  it("matches each VM with its own node", () => {
    const out = observedVms(
      [vm(VmState.RUNNING, "n1"), vm(VmState.RUNNING, "n2")],
      [
        node(NodeReadiness.NOT_READY, 1),
        create(NodeSummarySchema, { info: { id: { id: "n2" } }, readiness: NodeReadiness.READY }),
      ],
      FENCE,
    );
    assert.deepEqual(
      out.map((v) => v.state),
      [VmState.UNKNOWN, VmState.RUNNING],
    );
  });
});
