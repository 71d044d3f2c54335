import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { AGENT_BIN } from "./helpers/agent-process.js";
import { runProcess } from "./helpers/daemon-process.js";
import { startEtcd } from "./helpers/etcd-server.js";
import { eventually } from "./helpers/eventually.js";
import {
  FAST_HA_CLUSTER,
  type FencingCluster,
  startFencingCluster,
} from "./helpers/fencing-cluster.js";

/**
 * An HA VM whose node dies in the middle of migrating it: the node's agent
 * never says how the migration ended, so its outcome is settled from what
 * the nodes report once the node has been down past the fence delay, and
 * failover restarts the VM. Before, the daemon waited for the agent's
 * answer for good: the migration stayed RUNNING holding the VM's lock, and
 * every failover of the VM was refused ("another migration or failover of
 * this vm is in flight"), on a cluster whose other nodes were healthy.
 */
describe("a migration's source dies mid-transfer", async () => {
  const etcd = await startEtcd();
  // Not installed: skipped with a notice (under CI=true startEtcd throws instead).
  if (etcd === undefined) return;
  const NODES = ["node-a", "node-b", "node-c"] as const;
  /** Generated domains: odd positions are HA. */
  const VM = "node-a-vm-001";
  let c: FencingCluster;
  const fault = async (node: string, ...args: string[]) => {
    const r = await runProcess(process.execPath, [
      AGENT_BIN,
      "fault",
      "--dir",
      join(c.dir, node),
      ...args,
    ]);
    assert.equal(r.code, 0, r.stderr);
  };

  before(async () => {
    c = await startFencingCluster({ etcd, nodes: NODES, cluster: FAST_HA_CLUSTER });
  });
  after(async () => {
    await c?.close();
    await etcd.stop();
  });

  /** Starts a migration of `vm` to node-b held at 50 % on node-a; its id once it is there. */
  const heldAtHalf = async (vm: string) => {
    await fault("node-a", "hold-migration-at", "50");
    const r = await c.hvctl("migration", "run", "--vm", vm, "--target", "node-b", "--detach");
    assert.equal(r.code, 0, r.stderr);
    const id = r.stdout.trim().split(/\s+/)[0] ?? "";
    await eventually(
      async () => {
        const got = await c.hvctl("-o", "json", "migration", "get", id);
        assert.equal((JSON.parse(got.stdout) as { progressPct?: number }).progressPct, 50);
      },
      { timeoutMs: 15_000, intervalMs: 200 },
    );
    return id;
  };

  it("a cancel with the source up still rolls back (the source's watch ends with the call)", async () => {
    // Seen in a chaos run of the first version of the fix: the watch of the source, ended by
    // the cancel, answered first, and the migration was reported SUCCEEDED where nothing moved.
    const vm = "node-a-vm-003";
    const id = await heldAtHalf(vm);
    const r = await c.hvctl("migration", "cancel", id);
    assert.equal(r.code, 0, r.stderr);
    await eventually(
      async () => {
        const got = await c.hvctl("-o", "json", "migration", "get", id);
        const m = JSON.parse(got.stdout) as { state?: string; message?: string };
        assert.equal(m.state, "MIGRATION_STATE_CANCELLED", m.message);
      },
      { timeoutMs: 15_000, intervalMs: 200 },
    );
    assert.equal((await c.domains("node-a"))[vm], "running");
    assert.equal((await c.domains("node-b"))[vm], undefined);
    await fault("node-a", "clear");
  });

  it("the migration is settled and the HA VM runs again on another node", async () => {
    // Held at 50 % on the source, so the agent dies with the job under way.
    const id = await heldAtHalf(VM);
    c.agents.get("node-a")?.proc.kill("SIGKILL");
    // NOT_READY after 2 s, past the fence delay 4 s later: then settled and restarted.
    const where = await eventually(
      async () => {
        const running: string[] = [];
        for (const node of ["node-b", "node-c"])
          if ((await c.domains(node))[VM] === "running") running.push(node);
        assert.equal(running.length, 1, `${VM} runs again on one node`);
        return running[0];
      },
      { timeoutMs: 30_000, intervalMs: 500 },
    );
    const got = await c.hvctl("-o", "json", "migration", "get", id);
    const m = JSON.parse(got.stdout) as { state?: string; message?: string };
    assert.equal(m.state, "MIGRATION_STATE_FAILED", m.message);
    assert.match(String(m.message), /node-a is unreachable/);
    assert.ok(where === "node-b" || where === "node-c");
  });
});
