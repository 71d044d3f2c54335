import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createManualClock, handlerCall, RpcError, silentLogger } from "../core/index.js";
import { HealthSchema, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { CreateVmRequestSchema, type VmOperation, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore } from "../store/index.js";
import { createInventory } from "./inventory.js";
import { createVmService } from "./vm-service.js";

const GIB = 1024n ** 3n;
/** Free figures of any kind: "244.0 GiB", "52 vCPUs". */
const FIGURES = /\d\s*(GiB|vCPUs)/;

describe("CreateVm refusals (NO_TARGET)", () => {
  it("tell a tenant-confined caller why in words, without the free room other tenants' VMs leave; a cluster-wide caller gets the figures", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-notarget-"));
    const store = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    const clock = createManualClock(1_000_000);
    const inventory = createInventory({ store, clock, heartbeatTtlMs: 30_000 });
    const binding = createVmService({ inventory, store, clock });
    const createVm = handlerCall<VmOperation>(binding, "CreateVm");
    /** The NO_TARGET message of a create, as `tenant` (undefined: cluster-wide) would get it. */
    const refused = async (tenant: string | undefined, spec: object, nodeId?: string) => {
      const req = create(CreateVmRequestSchema, {
        vmId: "big-1",
        requestId: "rq-1",
        tenant: tenant ?? "",
        nodeId: nodeId === undefined ? undefined : { id: nodeId },
        spec,
      });
      const err = await createVm(req, tenant).then(
        () => assert.fail("created"),
        (e: unknown) => e,
      );
      assert.ok(err instanceof RpcError && err.reason === "NO_TARGET", String(err));
      return err.clientMessage;
    };
    try {
      await inventory.register(
        create(NodeInfoSchema, {
          id: { id: "node-03" },
          capacity: { cpuCores: 16, memoryBytes: 256n * GIB },
        }),
        "ops",
      );
      // VMs that are not acme's use 12 GiB and 12 vCPUs there, which acme must not learn.
      await inventory.heartbeat(
        create(HealthSchema, {
          nodeId: { id: "node-03" },
          timestamp: { seconds: BigInt(clock.now() / 1000) },
          vms: ["g-1", "g-2", "g-3"].map((id) => ({
            id,
            state: VmState.RUNNING,
            vcpus: 4,
            memoryBytes: 4n * GIB,
            nodeId: { id: "node-03" },
          })),
        }),
      );

      const memory = { vcpus: 2, memoryBytes: 1024n * GIB };
      const vcpus = { vcpus: 1000, memoryBytes: GIB };
      const cases = [
        { name: "memory on node-03", spec: memory, node: "node-03", words: "free memory" },
        { name: "vCPUs on node-03", spec: vcpus, node: "node-03", words: "free vCPUs" },
        { name: "memory on any node", spec: memory, node: undefined, words: "free memory" },
      ];
      for (const c of cases) {
        const confined = await refused("acme", c.spec, c.node);
        assert.doesNotMatch(confined, FIGURES, `${c.name}: ${confined}`);
        assert.match(confined, new RegExp(`node-03 has not enough ${c.words} for the vm`), c.name);
      }
      assert.match(
        await refused(undefined, memory, "node-03"),
        /node-03 has 244\.0 GiB free after reservations; vm needs 1024\.0 GiB/,
      );
      assert.match(
        await refused(undefined, vcpus, "node-03"),
        /node-03 has 52 vCPUs free after reservations; vm needs 1000/,
      );
      assert.match(
        await refused(undefined, memory),
        /the only node does not pass every check: node-03 has 244\.0 GiB free/,
      );
    } finally {
      inventory.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
