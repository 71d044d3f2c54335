import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { createServiceClient, openChannel, resolveContext } from "../src/client/index.js";
import {
  MigrationPhase,
  MigrationService,
  MigrationState,
} from "../src/gen/debvisor/v1/migration_pb.js";
import { NodeReadiness, NodeService } from "../src/gen/debvisor/v1/node_pb.js";
import { AGENT_BIN } from "./helpers/agent-process.js";
import { type DaemonProcess, runProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";

/**
 * The dev cluster as `npm start` runs it: the daemon plus three
 * debvisor-agent processes, each a simulated node with its own domains in
 * its own directory. Timings shortened: heartbeats every second, NOT_READY
 * after two missed, a migration 1 s, fence delay 4 s: its self-fence window
 * (2.67 s) lets a renewal come 1.67 s late before an agent stops its HA VMs.
 * A 2 s delay left 0.33 s, which a loaded CI machine missed: the agents
 * fenced themselves (rightly) before the first migration.
 */
describe("the dev cluster of agent processes", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let channel: ReturnType<typeof openChannel>;
  let nodes: ReturnType<typeof createServiceClient<typeof NodeService>>;
  let migrations: ReturnType<typeof createServiceClient<typeof MigrationService>>;
  const nodeDir = (id: string) => join(dir, "nodes", id);
  const agent = (...args: string[]) => runProcess(process.execPath, [AGENT_BIN, ...args]);
  /** What the node's own hypervisor holds, as `debvisor-agent status -o json` prints it. */
  const local = async (id: string) => {
    const r = await agent("status", "--dir", nodeDir(id), "--driver", "sim", "-o", "json");
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { node: string; domains: { id: string; state: string }[] };
    assert.equal(out.node, id);
    return new Map(out.domains.map((d) => [d.id, d.state]));
  };
  const fault = async (id: string, ...what: string[]) => {
    const r = await agent("fault", "--dir", nodeDir(id), ...what);
    assert.equal(r.code, 0, r.stderr);
  };
  /** What a node's hypervisor did and its agent warned of: shown when a check on that node fails. */
  const story = (...ids: string[]) =>
    ids
      .map((id) => {
        const log = join(nodeDir(id), "sim-actions.log");
        const actions = existsSync(log) ? readFileSync(log, "utf8") : "";
        const warned = daemon.lines.filter(
          (l) => l.startsWith(`[${id}] `) && /"level":"(warn|error|fatal)"/.test(l),
        );
        return `${id} actions:\n${actions}${id} warnings:\n${warned.join("\n")}`;
      })
      .join("\n");
  const readiness = async (id: string) => (await nodes.getNode({ id: { id } })).summary?.readiness;
  /** Runs a migration to its end and answers the final record. */
  const migrate = async (vmId: string, target: string, begun?: string) => {
    const migrationId =
      begun ??
      (
        await migrations.startMigration({
          vm: { vmId },
          target: { nodeId: { id: target } },
        })
      ).migrationId;
    return eventually(
      async () => {
        const m = await migrations.getMigration({ migrationId });
        assert.ok(
          m.state !== MigrationState.PENDING && m.state !== MigrationState.RUNNING,
          `still ${MigrationState[m.state]}`,
        );
        return m;
      },
      { timeoutMs: 15_000, intervalMs: 100 },
    );
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-agentcluster-"));
    daemon = await startDevDaemon(dir, {
      dev: { agents: { enabled: true, migrationMs: 1000 } },
      cluster: {
        heartbeatIntervalMs: 1000,
        heartbeatMissedIntervals: 2,
        fenceDelayMs: 4000,
        failover: { enabled: false },
      },
      storage: { replication: { scheduler: false } },
      panel: { enabled: false },
    });
    channel = openChannel(resolveContext(join(dir, "hvctl.yaml")));
    nodes = createServiceClient(NodeService, channel);
    migrations = createServiceClient(MigrationService, channel);
    await eventually(
      async () => {
        const list = await nodes.listNodes({});
        assert.deepEqual(
          list.nodes.map((n) => [n.info?.id?.id, n.readiness, n.vmCount]),
          [
            ["node-01", NodeReadiness.READY, 3],
            ["node-02", NodeReadiness.READY, 3],
            ["node-03", NodeReadiness.READY, 3],
          ],
        );
      },
      { timeoutMs: 20_000, intervalMs: 200 },
    );
  });
  after(() => {
    channel?.close();
    daemon?.kill();
  });

  it("gives a late lease renewal more than a heartbeat interval: the daemon does not warn", () => {
    assert.equal(
      daemon.logs.find((l) => String(l.msg).startsWith("the self-fence window")),
      undefined,
    );
  });

  it("runs each node as its own agent process with a pid file", () => {
    const pids = ["node-01", "node-02", "node-03"].map((id) =>
      Number(readFileSync(join(nodeDir(id), "agent.pid"), "utf8")),
    );
    assert.equal(new Set(pids).size, 3);
    for (const pid of pids) assert.ok(pid !== daemon.proc.pid && process.kill(pid, 0));
  });

  it("migrates a vm live from one agent to another: SUCCEEDED, and the agents' own hypervisors agree", async () => {
    assert.equal((await local("node-01")).get("vm-001"), "running", story("node-01"));
    const started = await migrations.startMigration({
      vm: { vmId: "vm-001" },
      target: { nodeId: { id: "node-02" } },
    });
    // Followed as hvctl follows it: the phase never goes back (it went preparing, transferring,
    // preparing again when the agent's "started" was taken for a transfer).
    const phases: string[] = [];
    for await (const w of migrations.watchMigration(
      { migrationId: started.migrationId },
      { signal: AbortSignal.timeout(15_000) },
    )) {
      const phase = MigrationPhase[w.phase] ?? String(w.phase);
      if (phases.at(-1) !== phase) phases.push(phase);
      if (w.state !== MigrationState.PENDING && w.state !== MigrationState.RUNNING) break;
    }
    const order = Object.values(MigrationPhase).filter((v) => typeof v === "string");
    const ranks = phases.map((p) => order.indexOf(p));
    assert.deepEqual(
      ranks,
      [...ranks].sort((a, b) => a - b),
      `phases in order: ${phases.join(" ")}`,
    );
    const m = await migrate("vm-001", "node-02", started.migrationId);
    assert.equal(m.state, MigrationState.SUCCEEDED, m.message);
    assert.equal(m.live, true);
    assert.ok(m.bytesTotal > 0n, "the agent's transfer figures reached the migration record");
    const [source, target] = await Promise.all([local("node-01"), local("node-02")]);
    assert.equal(source.has("vm-001"), false, `gone from the source\n${story("node-01")}`);
    assert.equal(
      target.get("vm-001"),
      "running",
      `running on the target\n${story("node-01", "node-02")}`,
    );
  });

  it("rolls back a migration that a fault injected at run time fails at 40 %: the vm stays on its source only", async () => {
    await fault("node-02", "fail-migration-at", "40");
    try {
      const m = await migrate("vm-001", "node-03");
      assert.equal(m.state, MigrationState.FAILED);
      assert.equal(m.phase, MigrationPhase.ROLLED_BACK);
      assert.match(m.message, /40 %.*stays on node-02/);
      const [source, target] = await Promise.all([local("node-02"), local("node-03")]);
      assert.equal(source.get("vm-001"), "running");
      assert.equal(target.has("vm-001"), false);
    } finally {
      await fault("node-02", "clear");
    }
  });

  it("takes a partitioned agent's node to NOT_READY and back to READY once healed", async () => {
    await fault("node-03", "partition");
    await eventually(
      async () => assert.equal(await readiness("node-03"), NodeReadiness.NOT_READY),
      {
        timeoutMs: 10_000,
        intervalMs: 200,
      },
    );
    assert.equal(await readiness("node-02"), NodeReadiness.READY, "only the cut-off node");
    await fault("node-03", "heal");
    await eventually(async () => assert.equal(await readiness("node-03"), NodeReadiness.READY), {
      timeoutMs: 10_000,
      intervalMs: 200,
    });
  });

  it("shifts a node's reported clock at run time: the skew shows, never trusted (readiness follows the lease), and clears", async () => {
    const skew = async () =>
      (await nodes.getNode({ id: { id: "node-01" } })).summary?.reportSkewMs ?? 0n;
    await fault("node-01", "clock-offset", "60000");
    try {
      await eventually(async () => assert.ok((await skew()) >= 55_000n, `skew ${await skew()}`), {
        timeoutMs: 10_000,
        intervalMs: 200,
      });
      assert.equal(await readiness("node-01"), NodeReadiness.READY);
    } finally {
      await fault("node-01", "clear");
    }
    await eventually(async () => assert.ok((await skew()) < 5_000n, `skew ${await skew()}`), {
      timeoutMs: 10_000,
      intervalMs: 200,
    });
  });

  it("fails a vm over to another agent (RECOVER) once its node's agent is killed -9, after the fence delay; revives the agent", async () => {
    const pid = Number(readFileSync(join(nodeDir("node-03"), "agent.pid"), "utf8"));
    process.kill(pid, "SIGKILL");
    await eventually(
      async () => assert.equal(await readiness("node-03"), NodeReadiness.NOT_READY),
      {
        timeoutMs: 10_000,
        intervalMs: 200,
      },
    );
    // Within the fence delay it is refused: the node might still run the vm.
    await assert.rejects(migrations.failoverVM({ vmId: "vm-007" }), (err: grpc.ServiceError) => {
      assert.match(err.details, /fence delay/);
      return true;
    });
    const result = await eventually(() => migrations.failoverVM({ vmId: "vm-007" }), {
      timeoutMs: 15_000,
      intervalMs: 250,
    });
    const target = result.target?.nodeId?.id ?? "";
    assert.ok(target === "node-01" || target === "node-02", `restarted on ${target}`);
    const [there, dead] = await Promise.all([local(target), local("node-03")]);
    assert.equal(there.get("vm-007"), "running", "the target's agent runs it");
    // The dead node's disk still holds its copy: two nodes each hold one (fencing decides later).
    assert.equal(dead.has("vm-007"), true);
    assert.ok(existsSync(join(nodeDir(target), "operations.json")));
    const ops = readFileSync(join(nodeDir(target), "operations.json"), "utf8");
    assert.match(ops, /OPERATION_KIND_RECOVER/);
    // Revived at run time: the dev daemon starts the dead agent again.
    await fault("node-03", "revive");
    await eventually(async () => assert.equal(await readiness("node-03"), NodeReadiness.READY), {
      timeoutMs: 15_000,
      intervalMs: 200,
    });
    assert.notEqual(Number(readFileSync(join(nodeDir("node-03"), "agent.pid"), "utf8")), pid);
  });
});
