import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createServiceClient, openChannel, resolveContext } from "../src/client/index.js";
import { AuditService } from "../src/gen/debvisor/v1/audit_pb.js";
import { MigrationKind, MigrationService } from "../src/gen/debvisor/v1/migration_pb.js";
import { NodeReadiness, NodeService } from "../src/gen/debvisor/v1/node_pb.js";
import { StorageBackend } from "../src/gen/debvisor/v1/storage_pb.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";

describe("automatic failover in the built daemon (dev mode, a simulated node cut off)", () => {
  let dir: string;
  let daemon: DaemonProcess;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-failover-"));
    daemon = await startDevDaemon(dir, {
      simulation: {
        nodes: 3,
        vmsPerNode: 4,
        faults: [{ kind: "partition", node: "node-02", afterMs: 300 }],
      },
      cluster: {
        heartbeatIntervalMs: 1000,
        heartbeatMissedIntervals: 2,
        fenceDelayMs: 2000,
        failover: { intervalMs: 250 },
      },
    });
  });
  after(() => daemon?.kill());

  it("restarts the cut-off node's HA vms elsewhere after the fence delay and audits each decision", async () => {
    const ch = openChannel(resolveContext(join(dir, "hvctl.yaml")));
    try {
      const nodes = createServiceClient(NodeService, ch);
      const before = await nodes.getNode({ id: { id: "node-02" } });
      const ha = before.vms.filter(
        (vm) => vm.ha && vm.disks.every((d) => d.backend === StorageBackend.BACKEND_RBD),
      );
      assert.ok(ha.length > 0, "node-02 carries an HA vm on shared storage");
      const migrations = createServiceClient(MigrationService, ch);
      await eventually(
        async () => {
          const list = await migrations.listMigrations({});
          const moved = list.migrations
            .filter((m) => m.kind === MigrationKind.FAILOVER && m.state === 3)
            .map((m) => m.vm?.vmId ?? "");
          assert.deepEqual([...moved].sort(), ha.map((vm) => vm.id).sort());
        },
        { timeoutMs: 20_000, intervalMs: 250 },
      );
      const node = await nodes.getNode({ id: { id: "node-02" } });
      assert.equal(node.summary?.readiness, NodeReadiness.NOT_READY);
      // Each restart began only after NOT_READY (TTL 2 s after the last heartbeat)
      // had lasted longer than the fence delay (2 s).
      const ms = (t?: { seconds: bigint; nanos: number }) =>
        t === undefined ? 0 : Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6);
      const lastHeard = ms(node.summary?.lastHeartbeat);
      assert.ok(lastHeard > 0);
      const failovers = (await migrations.listMigrations({})).migrations.filter(
        (m) => m.kind === MigrationKind.FAILOVER,
      );
      for (const m of failovers)
        assert.ok(
          ms(m.created) - lastHeard > 4000,
          `${m.vm?.vmId} restarted ${ms(m.created) - lastHeard} ms after the last heartbeat`,
        );

      const world = JSON.parse(readFileSync(join(dir, "simulation.json"), "utf8")) as {
        vms: { info: { id: string }; node: string; state: string }[];
        violations: string[];
      };
      assert.deepEqual(world.violations, [], "no vm ever ran twice");
      for (const vm of ha) {
        const w = world.vms.find((v) => v.info.id === vm.id);
        assert.notEqual(w?.node, "node-02");
        assert.equal(w?.state, "running");
      }
      const audit = createServiceClient(AuditService, ch);
      const { records } = await audit.listAuditRecords({ filter: { event: "failover.decision" } });
      const restarted = records.filter((r) => r.decision === "restarted");
      assert.equal(restarted.length, ha.length);
      assert.ok(restarted.every((r) => r.principal === "system:failover-controller"));
      // Each in its VM's tenant, so that tenant's auditors see it (audit:read in a tenant).
      assert.ok(
        ha.some((vm) => vm.tenant !== ""),
        "an HA vm in a tenant: the check below can fail",
      );
      assert.deepEqual(
        restarted.map((r) => [r.args, r.tenant]).sort(),
        ha.map((vm) => [`vm_id=${vm.id} node=node-02`, vm.tenant]).sort(),
      );
    } finally {
      ch.close();
    }
  });

  it("warns at start that 1 s heartbeats in a 1.33 s self-fence window leave a late renewal 0.33 s", () => {
    const warning = daemon.logs.find((l) => String(l.msg).startsWith("the self-fence window"));
    assert.equal(warning?.level, "warn");
    assert.equal(warning?.selfFenceWindowMs, 1333);
    assert.equal(warning?.slackMs, 333);
  });
});
