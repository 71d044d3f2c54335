import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createManualClock, handlerCall, RpcError, silentLogger } from "../core/index.js";
import { VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { OperationOutcome, OperationResultSchema } from "../gen/debvisor/v1/agent_pb.js";
import { HealthSchema, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { type VmOperation, VmOperationKind, VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, getMessage, rangeAll } from "../store/index.js";
import { createAgentOperations } from "./agent-operations.js";
import { createInventory } from "./inventory.js";
import { startVmOperationSettler } from "./vm-operation-settler.js";
import { VM_OPERATIONS_PREFIX, vmOperationId } from "./vm-operations.js";
import { createVmService } from "./vm-service.js";

const GIB = 1024n ** 3n;

/** A VmService over a fresh SQLite store, one ready node, and its handlers called as the transport calls them. */
async function cluster() {
  const store = createSqliteStore({
    path: join(mkdtempSync(join(tmpdir(), "dv-reqid-")), "state.db"),
    logger: silentLogger,
  });
  const clock = createManualClock(1_000_000);
  const inventory = createInventory({ store, clock, heartbeatTtlMs: 30_000, fenceDelayMs: 60_000 });
  const binding = createVmService({ inventory, store, clock });
  await inventory.register(
    create(NodeInfoSchema, { id: { id: "n1" }, capacity: { cpuCores: 8, memoryBytes: 64n * GIB } }),
    "ops",
  );
  await inventory.heartbeat(
    create(HealthSchema, {
      nodeId: { id: "n1" },
      timestamp: { seconds: BigInt(clock.now() / 1000) },
    }),
  );
  /**
   * Calls `name` as `who`: confined to `tenant` (the scope authorization
   * gives a tenant's caller), or cluster-wide when `tenant` is undefined.
   */
  const call = (name: string, request: object, who: string, tenant?: string) =>
    handlerCall<VmOperation>(binding, name)(request, tenant, who);
  const record = async (vmId: string) =>
    (await getMessage(store, VmRecordSchema, `vms/${vmId}`))?.message;
  const operationCount = async () => {
    let n = 0;
    for await (const _ of rangeAll(store, VM_OPERATIONS_PREFIX)) n++;
    return n;
  };
  return { store, clock, inventory, call, record, operationCount };
}

const spec = (vcpus = 1) => ({ name: "", vcpus, memoryBytes: GIB });

/** Asserts `p` is refused INVALID_ARGUMENT with a message matching `message`. */
async function refused(p: Promise<unknown>, message: RegExp) {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof RpcError, String(err));
    assert.equal(err.reason, "INVALID_ARGUMENT");
    assert.match(err.message, message);
    return true;
  });
}

describe("vmOperationId", () => {
  it("derives a cluster-wide caller's id as before tenant scopes counted", () => {
    // Pinned: a retry across the upgrade names the operation the old daemon wrote.
    assert.equal(vmOperationId("web-1", "deploy-1", undefined), "rq-abcc6a81842d0af5b539ea0d");
  });

  it("gives each tenant scope its own id for the same VM and key", () => {
    const ids = [undefined, "acme", "globex"].map((t) => vmOperationId("web-1", "deploy-1", t));
    assert.equal(new Set(ids).size, 3);
  });
});

describe("request_id, the lifecycle's idempotency key", () => {
  it("refuses a stop that reuses a start's key, changing nothing, and answers a true retry", async () => {
    const c = await cluster();
    try {
      await c.call("CreateVm", { vmId: "rq1", spec: spec() }, "ops");
      const start = await c.call("StartVm", { vmId: "rq1", requestId: "k2" }, "ops");
      assert.equal(start.kind, VmOperationKind.START);
      const before = await c.record("rq1");
      assert.equal(before?.desiredState, VmState.RUNNING);
      const count = await c.operationCount();

      await refused(
        c.call("StopVm", { vmId: "rq1", force: true, requestId: "k2" }, "ops"),
        /^request_id "k2" was already used for a start of rq1$/,
      );
      assert.deepEqual(await c.record("rq1"), before, "the VM's record is unchanged");
      assert.equal(await c.operationCount(), count, "no operation was written");

      const again = await c.call("StartVm", { vmId: "rq1", requestId: "k2" }, "someone-else");
      assert.equal(again.id, start.id, "a retried start names the same operation");
      assert.equal(again.requestedBy, "ops");
    } finally {
      await c.store.close();
    }
  });

  it("answers a stop's retry with the same force and timeout, and refuses other ones", async () => {
    const c = await cluster();
    try {
      await c.call("CreateVm", { vmId: "rq1", spec: spec(), start: true }, "ops");
      const stop = await c.call("StopVm", { vmId: "rq1", force: true, requestId: "k3" }, "ops");
      // 0 is the default timeout, 60 s: the same stop.
      const retry = { vmId: "rq1", force: true, timeoutMs: 60_000, requestId: "k3" };
      assert.equal((await c.call("StopVm", retry, "ops")).id, stop.id);
      await refused(
        c.call("StopVm", { vmId: "rq1", force: false, requestId: "k3" }, "ops"),
        /^request_id "k3" was already used for a stop of rq1 with other parameters \(force\)$/,
      );
      await refused(
        c.call("RebootVm", { vmId: "rq1", force: true, requestId: "k3" }, "ops"),
        /already used for a stop of rq1$/,
      );
      assert.equal((await c.record("rq1"))?.lastOperationId, stop.id);
    } finally {
      await c.store.close();
    }
  });

  it("never answers one tenant's operation to another tenant reusing its key", async () => {
    const c = await cluster();
    const stop = new AbortController();
    try {
      const settler = startVmOperationSettler({
        store: c.store,
        vmRecords: c.inventory.vmRecords,
        logger: silentLogger,
        signal: stop.signal,
        onSettled: () => {},
      });
      await settler.ready;
      const created = await c.call(
        "CreateVm",
        { vmId: "web-1", spec: spec(), requestId: "deploy-1" },
        "acme-ops",
        "acme",
      );
      // acme deletes it; its node reports the delete done and the record goes.
      const deleted = await c.call("DeleteVm", { vmId: "web-1" }, "acme-ops", "acme");
      const agentOps = createAgentOperations(c.store, c.clock);
      const result = create(OperationResultSchema, {
        operationId: deleted.id,
        outcome: OperationOutcome.SUCCEEDED,
      });
      assert.ok(await agentOps.finish("n1", result));
      // The settler follows the store's watch; a loaded machine may take seconds.
      const until = Date.now() + 20_000;
      while ((await c.record("web-1")) !== undefined && Date.now() < until)
        await new Promise((r) => setTimeout(r, 20));
      assert.equal(await c.record("web-1"), undefined, "acme's web-1 is deleted");

      const theirs = await c.call(
        "CreateVm",
        { vmId: "web-1", spec: spec(), requestId: "deploy-1" },
        "globex-ops",
        "globex",
      );
      assert.notEqual(theirs.id, created.id, "globex gets its own operation");
      assert.equal(theirs.requestedBy, "globex-ops");
      const rec = await c.record("web-1");
      assert.equal(rec?.tenant, "globex", "globex's VM is created");
      assert.equal(rec?.lastOperationId, theirs.id);
      const seen = await c.call("GetOperation", { operationId: theirs.id }, "globex-ops", "globex");
      assert.equal(seen.id, theirs.id);
    } finally {
      stop.abort();
      await c.store.close();
    }
  });

  it("refuses a create that reuses a key with another spec in the same scope", async () => {
    const c = await cluster();
    try {
      const req = { vmId: "web-1", spec: spec(1), requestId: "deploy-1" };
      const created = await c.call("CreateVm", req, "acme-ops", "acme");
      // What a retry finds once the VM's record is gone (deleted, or its create failed).
      const gone = await c.store.delete("vms/web-1");
      c.inventory.vmRecords.forget("web-1", gone.revision);
      await refused(
        c.call("CreateVm", { ...req, spec: spec(2) }, "acme-ops", "acme"),
        /^request_id "deploy-1" was already used for a create of web-1 with other parameters \(vcpus\)$/,
      );
      assert.equal(await c.record("web-1"), undefined, "nothing was created");
      assert.equal((await c.call("CreateVm", req, "acme-ops", "acme")).id, created.id);
    } finally {
      await c.store.close();
    }
  });
});
