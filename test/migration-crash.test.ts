import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { createServiceClient, openChannel, resolveContext } from "../src/client/index.js";
import { AuditService } from "../src/gen/debvisor/v1/audit_pb.js";
import {
  MigrationPhase,
  MigrationService,
  MigrationState,
} from "../src/gen/debvisor/v1/migration_pb.js";
import { NodeReadiness, NodeService } from "../src/gen/debvisor/v1/node_pb.js";
import { StorageBackend } from "../src/gen/debvisor/v1/storage_pb.js";
import { type VmInfo, VmService, VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";

const liveOnRbd = (v: VmInfo) =>
  v.liveMigratable &&
  v.cpuModel === "host-model" &&
  v.state === VmState.RUNNING &&
  v.disks.every((d) => d.backend === StorageBackend.BACKEND_RBD);

function clients(dir: string) {
  const ch = openChannel(resolveContext(join(dir, "hvctl.yaml")));
  return {
    ch,
    nodes: createServiceClient(NodeService, ch),
    vms: createServiceClient(VmService, ch),
    migrations: createServiceClient(MigrationService, ch),
  };
}

describe("the seed design's node flow, through the built daemon", () => {
  let dir: string;
  let daemon: DaemonProcess;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-seed-"));
    daemon = await startDevDaemon(dir, { simulation: { enabled: false } });
  });
  after(() => daemon?.kill());

  it("registers node-01, takes a heartbeat with cpu_load 0.5, and ListNodes returns it ready", async () => {
    const c = clients(dir);
    try {
      const ack = await c.nodes.registerNode({
        id: { id: "node-01" },
        hostname: "hv01.example.internal",
        ip: "192.0.2.10",
        capacity: { cpuCores: 16, memoryBytes: 64n * 1024n ** 3n },
      });
      assert.equal(ack.message, "registered");
      const hb = await c.nodes.heartbeat({
        nodeId: { id: "node-01" },
        cpuLoad: 0.5,
        timestamp: { seconds: BigInt(Math.floor(Date.now() / 1000)) },
      });
      assert.equal(hb.message, "recorded");
      const list = await c.nodes.listNodes({});
      const n = list.nodes.find((x) => x.info?.id?.id === "node-01");
      assert.equal(n?.health?.cpuLoad, 0.5);
      assert.equal(n?.readiness, NodeReadiness.READY);
      await assert.rejects(
        c.nodes.heartbeat({ nodeId: { id: "node-99" }, cpuLoad: 0.5 }),
        (e: grpc.ServiceError) => e.code === 5,
      );
    } finally {
      c.ch.close();
    }
  });
});

describe("a daemon killed with SIGKILL mid-migration", () => {
  let dir: string;
  let daemon: DaemonProcess;
  const config = {
    simulation: { migrationMs: 8000 },
    cluster: { heartbeatIntervalMs: 1000, runnerLeaseMs: 1000, failover: { enabled: false } },
  };
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-crash-"));
    daemon = await startDevDaemon(dir, config);
  });
  after(() => daemon?.kill());

  it("MigrateVM answers DEADLINE_EXCEEDED at its deadline and the migration goes on", async () => {
    const c = clients(dir);
    try {
      const { vms } = await c.vms.listVms({});
      const vm = vms.filter(liveOnRbd).at(-1);
      assert.ok(vm);
      // 3 s: time for a loaded daemon to write the migration before the deadline, and well
      // short of its 8 s, so it still runs when listed.
      await assert.rejects(
        c.migrations.migrateVM({ vm: { vmId: vm.id } }, { timeoutMs: 3000 }),
        (e: grpc.ServiceError) => e.code === 4,
      );
      const { migrations } = await c.migrations.listMigrations({ vm: { vmId: vm.id } });
      assert.equal(migrations.length, 1);
      assert.equal(migrations[0]?.state, MigrationState.RUNNING);
      const cancelled = await c.migrations.cancelMigration({
        migrationId: migrations[0]?.migrationId ?? "",
      });
      assert.equal(cancelled.state, MigrationState.CANCELLED);
    } finally {
      c.ch.close();
    }
  });

  it("reconciles on restart: the migration is rolled back and the vm is on exactly one node", async () => {
    let c = clients(dir);
    const { vms } = await c.vms.listVms({});
    const vm = vms.find(liveOnRbd);
    assert.ok(vm, "the dev cluster has a live-migratable vm on RBD");
    const source = vm.nodeId?.id ?? "";
    const started = await c.migrations.startMigration({ vm: { vmId: vm.id } });
    assert.equal(started.source?.nodeId?.id, source);
    for await (const m of c.migrations.watchMigration(
      { migrationId: started.migrationId },
      { timeoutMs: 20_000 },
    )) {
      if (m.phase === MigrationPhase.TRANSFERRING && m.progressPct >= 10) break;
    }
    c.ch.close();
    const world = () =>
      JSON.parse(readFileSync(join(dir, "simulation.json"), "utf8")) as {
        vms: { info: { id: string }; node: string; state: string }[];
        inflight: [string, string][];
      };
    assert.deepEqual(world().inflight, [[vm.id, started.target?.nodeId?.id]]);
    daemon.proc.kill("SIGKILL");
    await daemon.exited;

    daemon = await startDevDaemon(dir, config);
    c = clients(dir);
    try {
      const m = await eventually(
        async () => {
          const now = await c.migrations.getMigration({ migrationId: started.migrationId });
          return now.state !== MigrationState.RUNNING && now;
        },
        { timeoutMs: 20_000, intervalMs: 250 },
      );
      assert.equal(m.state, MigrationState.FAILED, m.message);
      assert.equal(m.phase, MigrationPhase.ROLLED_BACK);
      assert.match(m.message, /rolled back/);
      const placed = world().vms.filter((v) => v.info.id === vm.id);
      assert.equal(placed.length, 1);
      assert.equal(placed[0]?.node, source);
      assert.equal(placed[0]?.state, "running");
      assert.deepEqual(world().inflight, []);
      const listed = (await c.vms.listVms({})).vms.filter((v) => v.id === vm.id);
      assert.equal(listed.length, 1, "listed once");
      assert.equal(listed[0]?.nodeId?.id, source);
      const plan = await c.migrations.prepareMigration({ vm: { vmId: vm.id } });
      assert.ok(plan.allowed, "lock and reservation were released");
      const { records } = await createServiceClient(AuditService, c.ch).listAuditRecords({
        filter: { event: "migration.settled" },
      });
      const settled = records.find((r) => r.requestId === started.migrationId);
      assert.equal(settled?.principal, "system:reconciler");
      assert.equal(settled?.decision, "rolled-back");
      // In the VM's tenant, so that tenant's auditors see it.
      assert.equal(settled?.tenant, vm.tenant);
    } finally {
      c.ch.close();
    }
  });
});
