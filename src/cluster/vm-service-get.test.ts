import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createManualClock, handlerCall, RpcError, silentLogger } from "../core/index.js";
import { VMRefSchema } from "../gen/debvisor/v1/migration_pb.js";
import { HealthSchema, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import {
  ListVmsRequestSchema,
  type VmInfo,
  type VmList,
  VmState,
} from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore } from "../store/index.js";
import { createInventory } from "./inventory.js";
import { createVmService } from "./vm-service.js";

const TTL_MS = 30_000;
const FENCE_MS = 60_000;

describe("VmService.GetVm", () => {
  it("shows a VM as ListVms does: as reported, unknown once its node is not ready, stopped past the fence delay", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-getvm-"));
    const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    const clock = createManualClock(1_000_000);
    const inventory = createInventory({
      store,
      clock,
      heartbeatTtlMs: TTL_MS,
      fenceDelayMs: FENCE_MS,
    });
    const binding = createVmService({ inventory, store, clock, fenceDelayMs: FENCE_MS });
    const getVm = handlerCall<VmInfo>(binding, "GetVm");
    const listVms = handlerCall<VmList>(binding, "ListVms");
    const beat = (node: string, vms: { id: string; state: VmState; on?: string }[]) =>
      inventory.heartbeat(
        create(HealthSchema, {
          nodeId: { id: node },
          timestamp: { seconds: BigInt(clock.now() / 1000) },
          vms: vms.map(({ id, state, on }) => ({ id, state, nodeId: { id: on ?? node } })),
        }),
      );
    try {
      for (const id of ["n1", "n2"])
        await inventory.register(create(NodeInfoSchema, { id: { id } }), "ops");
      await beat("n1", [
        { id: "vm-a", state: VmState.RUNNING },
        { id: "vm-b", state: VmState.STOPPED },
        // Node ids ignore case: a VM naming its node otherwise is still that node's.
        { id: "vm-d", state: VmState.RUNNING, on: "N1" },
        // Upstream reporters leave a VM's node out: it is the node whose report holds it.
        { id: "vm-e", state: VmState.RUNNING, on: "" },
      ]);
      // The node filter ignores case, as node ids do.
      for (const asked of ["n1", "N1"]) {
        const onN1 = (await listVms(create(ListVmsRequestSchema, { nodeId: { id: asked } }))).vms;
        assert.deepEqual(
          onN1.map((v) => [v.id, v.nodeId?.id]),
          ["vm-a", "vm-b", "vm-d", "vm-e"].map((id) => [id, "n1"]),
          `ListVms(node_id ${asked})`,
        );
      }
      const states = async () => {
        const listed = (await listVms(create(ListVmsRequestSchema, {}))).vms;
        const out: Record<string, VmState> = {};
        for (const want of listed) {
          const got = await getVm(create(VMRefSchema, { vmId: want.id }));
          assert.deepEqual(got, want, `GetVm ${want.id} answers what ListVms lists`);
          out[want.id] = got.state;
        }
        return out;
      };
      assert.deepEqual(await states(), {
        "vm-a": VmState.RUNNING,
        "vm-b": VmState.STOPPED,
        "vm-d": VmState.RUNNING,
        "vm-e": VmState.RUNNING,
      });
      // n1 falls silent while n2 keeps reporting.
      clock.advance(TTL_MS + 1_000);
      await beat("n2", [{ id: "vm-c", state: VmState.RUNNING }]);
      assert.deepEqual(await states(), {
        "vm-a": VmState.UNKNOWN,
        "vm-b": VmState.STOPPED,
        "vm-c": VmState.RUNNING,
        "vm-d": VmState.UNKNOWN,
        "vm-e": VmState.UNKNOWN,
      });
      clock.advance(FENCE_MS);
      await beat("n2", [{ id: "vm-c", state: VmState.RUNNING }]);
      assert.deepEqual(await states(), {
        "vm-a": VmState.STOPPED,
        "vm-b": VmState.STOPPED,
        "vm-c": VmState.RUNNING,
        "vm-d": VmState.STOPPED,
        "vm-e": VmState.STOPPED,
      });
      await assert.rejects(
        getVm(create(VMRefSchema, { vmId: "vm-none" })),
        (e) => e instanceof RpcError && e.reason === "VM_NOT_FOUND",
      );
    } finally {
      inventory.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
