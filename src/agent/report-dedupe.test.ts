import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { type AgentMessage, AgentMessageSchema } from "../gen/debvisor/v1/agent_pb.js";
import { VmInfoSchema, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createReportDedupe } from "./report-dedupe.js";

const vm = (id: string, state = VmState.RUNNING) => ({
  id,
  state,
  vcpus: 2,
  memoryBytes: 1n << 30n,
});
const health = (vms: ReturnType<typeof vm>[]) => ({ nodeId: { id: "n1" }, cpuLoad: 0.5, vms });
const hello = (vms: ReturnType<typeof vm>[]) =>
  create(AgentMessageSchema, { kind: { case: "hello", value: { health: health(vms) } } });
const beat = (vms: ReturnType<typeof vm>[], sequence: bigint) =>
  create(AgentMessageSchema, {
    kind: { case: "heartbeat", value: { health: health(vms), sequence } },
  });
/** What went out: the VM ids listed, or "unchanged". */
const sent = (m: AgentMessage) => {
  assert.equal(m.kind.case, "heartbeat");
  const v = m.kind.case === "heartbeat" ? m.kind.value : undefined;
  return v?.vmsUnchanged === true
    ? "unchanged"
    : (v?.health?.vms ?? []).map((x) => `${x.id}:${x.state}`).join(",");
};

describe("heartbeats without repeated VM lists", () => {
  it("lists the VMs until the server says it takes vms_unchanged", () => {
    const d = createReportDedupe();
    d.outgoing(hello([vm("a")]));
    assert.equal(sent(d.outgoing(beat([vm("a")], 1n))), "a:1");
    d.accepted(false);
    assert.equal(sent(d.outgoing(beat([vm("a")], 2n))), "a:1");
  });

  it("sends none while they equal the last list sent, and lists them again when any changes", () => {
    const d = createReportDedupe();
    d.outgoing(hello([vm("a"), vm("b")]));
    d.accepted(true);
    const first = beat([vm("a"), vm("b")], 1n);
    const out = d.outgoing(first);
    assert.equal(sent(out), "unchanged");
    assert.equal(out.kind.case === "heartbeat" && out.kind.value.sequence, 1n);
    assert.equal(out.kind.case === "heartbeat" && out.kind.value.health?.cpuLoad, 0.5);
    // The message it was given is not changed (its report may be shared).
    assert.equal(sent(first), "a:1,b:1");
    assert.equal(sent(d.outgoing(beat([vm("a"), vm("b", VmState.STOPPED)], 2n))), "a:1,b:2");
    assert.equal(sent(d.outgoing(beat([vm("a"), vm("b", VmState.STOPPED)], 3n))), "unchanged");
    assert.equal(sent(d.outgoing(beat([vm("a")], 4n))), "a:1");
    assert.equal(sent(d.outgoing(beat([], 5n))), "");
    assert.equal(sent(d.outgoing(beat([], 6n))), "unchanged");
  });

  it("lists them on a stream that has sent no Hello", () => {
    const d = createReportDedupe();
    d.accepted(true);
    assert.equal(sent(d.outgoing(beat([vm("a")], 1n))), "a:1");
    assert.equal(sent(d.outgoing(beat([vm("a")], 2n))), "unchanged");
  });

  it("lists a VM changed in place since it was sent: what was sent is compared, not the driver's objects", () => {
    const d = createReportDedupe();
    const kept = [create(VmInfoSchema, vm("a"))];
    d.outgoing(hello(kept));
    d.accepted(true);
    (kept[0] as { state: VmState }).state = VmState.STOPPED;
    assert.equal(sent(d.outgoing(beat(kept, 1n))), "a:2");
    assert.equal(sent(d.outgoing(beat(kept, 2n))), "unchanged");
  });
});
