import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createServiceClient, openChannel, resolveContext } from "../src/client/index.js";
import {
  MigrationPhase,
  MigrationService,
  MigrationState,
} from "../src/gen/debvisor/v1/migration_pb.js";
import { NodeReadiness, NodeService } from "../src/gen/debvisor/v1/node_pb.js";
import { AGENT_BIN, enrollAgent } from "./helpers/agent-process.js";
import { agentStatus } from "./helpers/agent-status.js";
import { type DaemonProcess, runProcess, startDaemonProcess } from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";
import { hvctlInProcess } from "./helpers/hvctl-in-process.js";

/**
 * A migration between two agents is the source agent's job: it goes on
 * while the control plane that started it is dead, and the control plane
 * that comes back settles it from what the agents say once the job is over.
 */
describe("a migration between agents outlives a control-plane crash", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let address: string;
  const agents: ChildProcess[] = [];
  const start = async (listen: string, settleJobTimeoutMs?: number) => {
    const file = join(dir, "rpcd.yaml");
    writeFileSync(
      file,
      JSON.stringify({
        simulation: { enabled: false },
        cluster: {
          heartbeatIntervalMs: 1000,
          heartbeatMissedIntervals: 2,
          runnerLeaseMs: 2000,
          ...(settleJobTimeoutMs === undefined ? {} : { settleJobTimeoutMs }),
          failover: { enabled: false },
        },
        storage: { replication: { scheduler: false } },
        // A stopped agent's stream cannot end politely: do not wait long for it.
        shutdown: { drainTimeoutMs: 1000 },
        panel: { enabled: false },
      }),
    );
    return startDaemonProcess([
      "--dev",
      "--data-dir",
      dir,
      "--listen",
      listen,
      "--metrics-listen",
      "127.0.0.1:0",
      "--config",
      file,
    ]);
  };
  const hvctl = (...args: string[]) => hvctlInProcess(join(dir, "hvctl.yaml"), ...args);
  const clients = () => {
    const ch = openChannel(resolveContext(join(dir, "hvctl.yaml")));
    return {
      ch,
      nodes: createServiceClient(NodeService, ch),
      migrations: createServiceClient(MigrationService, ch),
    };
  };
  const local = async (node: string) => (await agentStatus(join(dir, node))).domains;
  const ids = async (node: string) => (await local(node)).map((d) => d.id);
  const fault = async (node: string, ...args: string[]) => {
    const r = await runProcess(process.execPath, [
      AGENT_BIN,
      "fault",
      "--dir",
      join(dir, node),
      ...args,
    ]);
    assert.equal(r.code, 0, r.stderr);
  };

  // A successor daemon knows a node READY only from a heartbeat it has itself seen: every
  // case waits for both agents to be back before it starts a migration.
  const bothReady = async () => {
    const { ch, nodes } = clients();
    try {
      await eventually(
        async () => {
          const list = await nodes.listNodes({});
          assert.deepEqual(
            list.nodes.map((n) => n.readiness),
            [NodeReadiness.READY, NodeReadiness.READY],
          );
        },
        { timeoutMs: 15_000, intervalMs: 200 },
      );
    } finally {
      ch.close();
    }
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-agentcrash-"));
    daemon = await start("127.0.0.1:0");
    address = daemon.grpcAddress;
    for (const node of ["node-a", "node-b"]) {
      await enrollAgent(hvctl, address, dir, node);
      agents.push(
        spawn(
          process.execPath,
          [
            AGENT_BIN,
            "run",
            "--dir",
            join(dir, node),
            "--server",
            address,
            "--driver",
            "sim",
            "--sim-vms",
            "3",
            "--sim-migration-ms",
            "4000",
          ],
          { stdio: "ignore" },
        ),
      );
    }
    await bothReady();
  });
  after(() => {
    for (const a of agents) a.kill("SIGKILL");
    daemon?.kill();
  });

  for (const [signal, vmId, how] of [
    ["SIGKILL", "node-a-vm-001", "kill -9 of the daemon"],
    ["SIGTERM", "node-a-vm-003", "the daemon stopping (SIGTERM: the agent's job is left to it)"],
  ] as const)
    it(`goes on after ${how} mid-transfer and is settled SUCCEEDED by its successor`, async () => {
      await bothReady();
      let { ch, migrations } = clients();
      const started = await migrations.startMigration({
        vm: { vmId },
        target: { nodeId: { id: "node-b" } },
      });
      await eventually(
        async () => {
          const m = await migrations.getMigration({ migrationId: started.migrationId });
          assert.ok(m.progressPct > 0, "transferring");
        },
        { timeoutMs: 10_000, intervalMs: 100 },
      );
      ch.close();
      // The source's agent is held still (SIGSTOP) so the successor surely finds the job
      // unfinished, whatever the machine's load; it goes on once continued.
      const source = agents[0] as ChildProcess;
      source.kill("SIGSTOP");
      daemon.proc.kill(signal);
      await daemon.exited;
      // The successor comes back on the same address while the agent still moves the vm.
      daemon = await start(address);
      assert.ok((await ids("node-a")).includes(vmId), "still transferring");
      source.kill("SIGCONT");
      ({ ch, migrations } = clients());
      try {
        const m = await eventually(
          async () => {
            const m = await migrations.getMigration({ migrationId: started.migrationId });
            assert.ok(m.state !== MigrationState.RUNNING && m.state !== MigrationState.PENDING);
            return m;
          },
          { timeoutMs: 20_000, intervalMs: 200 },
        );
        assert.equal(m.state, MigrationState.SUCCEEDED, m.message);
        assert.match(m.message, /finished while the control plane was down/);
        const [a, b] = await Promise.all([ids("node-a"), ids("node-b")]);
        assert.equal(a.includes(vmId), false, "gone from the source");
        assert.ok(b.includes(vmId), "on the target");
      } finally {
        ch.close();
      }
    });

  it("a job that hangs past the settle bound after a kill -9 is aborted through the agent, then settled FAILED/ROLLED_BACK with the lock released", async () => {
    // Same shape as node-a-vm-001 (same seed): on shared storage, migratable.
    const vmId = "node-b-vm-001";
    await fault("node-b", "hold-migration-at", "40");
    await bothReady();
    let { ch, migrations } = clients();
    let id = "";
    try {
      const started = await migrations.startMigration({
        vm: { vmId },
        target: { nodeId: { id: "node-a" } },
        allowDowntime: true,
      });
      id = started.migrationId;
      await eventually(
        async () => {
          const m = await migrations.getMigration({ migrationId: id });
          // Progress within a phase is saved at most once a second: 30 % is the last one seen.
          assert.ok(m.progressPct >= 30, `nearly held at 40 %, now ${m.progressPct}`);
        },
        { timeoutMs: 15_000, intervalMs: 100 },
      );
    } finally {
      ch.close();
    }
    daemon.proc.kill("SIGKILL");
    await daemon.exited;
    // The successor gives an orphan's job 3 s to end; this one never would.
    daemon = await start(address, 3000);
    ({ ch, migrations } = clients());
    try {
      const m = await eventually(
        async () => {
          const m = await migrations.getMigration({ migrationId: id });
          assert.ok(m.state !== MigrationState.RUNNING && m.state !== MigrationState.PENDING);
          return m;
        },
        { timeoutMs: 30_000, intervalMs: 200 },
      );
      assert.equal(m.state, MigrationState.FAILED, m.message);
      assert.equal(m.phase, MigrationPhase.ROLLED_BACK, m.message);
      assert.match(m.message, /rolled back, the vm stays on node-b/);
      const [a, b] = await Promise.all([local("node-a"), local("node-b")]);
      assert.equal(b.find((d) => d.id === vmId)?.state, "running", "runs on its source");
      assert.equal(
        a.some((d) => d.id === vmId),
        false,
        "not on the target",
      );
      const plan = await migrations.prepareMigration({
        vm: { vmId },
        target: { nodeId: { id: "node-a" } },
        allowDowntime: true,
      });
      assert.ok(
        plan.checks.find((c) => c.name === "no_migration_in_flight")?.passed,
        "lock released",
      );
    } finally {
      ch.close();
      await fault("node-b", "clear");
    }
  });
});
