import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";
import { hvctlInProcess } from "./helpers/hvctl-in-process.js";

interface Check {
  name: string;
  passed?: boolean;
  reason: string;
}
interface MigrationJson {
  migrationId: string;
  state: string;
  phase?: string;
  progressPct?: number;
  target?: { nodeId?: { id?: string } };
  source?: { nodeId?: { id?: string } };
  message?: string;
}

/**
 * Nodes, migration and failover through hvctl (in this process) against one dev
 * daemon: node-03 is cut off from the start (its heartbeats stop; it fences
 * itself), so the cluster has a failed node to fail over from while
 * node-01 and node-02 carry the migrations.
 */
describe("hvctl: migration, drain and failover on the dev cluster", () => {
  let dir: string;
  let daemon: DaemonProcess;
  const hvctl = (...args: string[]) => hvctlInProcess(join(dir, "hvctl.yaml"), ...args);
  const ok = async (...args: string[]) => {
    const r = await hvctl(...args);
    assert.equal(r.code, 0, `hvctl ${args.join(" ")}: ${r.stderr}`);
    return r;
  };
  const json = async <T>(...args: string[]) =>
    JSON.parse((await ok("-o", "json", ...args)).stdout) as T;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-hvctl-cluster-"));
    daemon = await startDevDaemon(dir, {
      simulation: {
        // Long enough that a detached migration is still running when the next hvctl starts, even on a loaded machine.
        migrationMs: 3000,
        faults: [{ kind: "partition", node: "node-03", afterMs: 0 }],
      },
      cluster: {
        heartbeatIntervalMs: 1000,
        heartbeatMissedIntervals: 2,
        fenceDelayMs: 2000,
        failover: { enabled: false },
      },
    });
  });
  after(() => daemon?.kill());

  it("plans a migration: every check as a table, and as JSON", async () => {
    const table = (await ok("migration", "plan", "--vm", "vm-001", "--target", "node-02")).stdout;
    assert.match(table, /^CHECK\s+RESULT\s+REASON/);
    assert.match(table, /target_memory\s+ok\s+node-02 has [\d.]+ GiB free/);
    assert.match(table, /allowed: live migration node-01 -> node-02/);
    const plan = await json<{ allowed: boolean; checks: Check[]; live: boolean }>(
      "migration",
      "plan",
      "--vm",
      "vm-001",
      "--target",
      "node-02",
    );
    assert.equal(plan.allowed, true);
    assert.ok(plan.checks.length >= 10);
    assert.ok(plan.live);
  });

  it("a refused plan exits 1 and names the failed check", async () => {
    // vm-003 is host-passthrough... but all dev nodes share a CPU; cordon node-02 instead.
    await ok("node", "cordon", "node-02", "--reason", "test");
    const r = await hvctl("migration", "plan", "--vm", "vm-001", "--target", "node-02");
    assert.equal(r.code, 1);
    assert.match(r.stdout, /target_schedulable\s+FAIL\s+node-02 is cordoned/);
    await ok("node", "uncordon", "node-02");
  });

  it("runs a migration with plain progress lines when not on a terminal", async () => {
    const r = await ok("migration", "run", "--vm", "vm-001", "--target", "node-02");
    assert.match(r.stderr, /^migration (m-\S+): vm-001 node-01 -> node-02 \(live\)$/m);
    assert.match(r.stderr, /: transferring \d+%( \(.*\))?$/m, "the phase alone, then the percent");
    assert.match(r.stderr, /: succeeded: migrated live$/m);
    const progress = /(\d+)%( \(.*\))?$/;
    const lines = r.stderr.split("\n").filter((l) => progress.test(l));
    const pcts = lines.map((l) => Number(progress.exec(l)?.[1]));
    assert.deepEqual(
      [...pcts].sort((a, b) => a - b),
      pcts,
      "progress only goes forward",
    );
    assert.ok(lines.length >= 3 && lines.length <= 20, "a line per step, not per update");
    const vm = await json<{ nodeId?: { id?: string } }>("vm", "get", "vm-001");
    assert.equal(vm.nodeId?.id, "node-02");
  });

  it("a migration followed by a successful incremental replication run: the job follows its vm", async () => {
    await ok("replication", "run", "vm-002-disk0-to-node-02"); // a replica on node-02 to move to
    await ok("migration", "run", "--vm", "vm-002", "--target", "node-02");
    const run = await json<{ state: string; incremental: boolean; followed: string }>(
      "replication",
      "run",
      "vm-002-disk0-to-node-02",
    );
    assert.equal(run.state, "REPL_STATE_SUCCESS");
    assert.equal(run.incremental, true, "from the common snapshot");
    assert.match(
      run.followed,
      /moved from node-01 to node-02.*direction reversed, now node-02 -> node-01/,
    );
    const jobs = await json<{
      jobs: {
        jobId: string;
        plan: { source: { nodeId: { id: string } }; target: { nodeId: { id: string } } };
      }[];
    }>("replication", "list");
    const job = jobs.jobs.find((j) => j.jobId === "vm-002-disk0-to-node-02");
    assert.equal(job?.plan.source.nodeId.id, "node-02");
    assert.equal(job?.plan.target.nodeId.id, "node-01");
    const status = await ok("replication", "status", "vm-002-disk0-to-node-02");
    assert.match(status.stdout, /^followed its vm:\s+the vm moved from node-01 to node-02/m);
  });

  it("lists and shows migrations as JSON", async () => {
    const { migrations } = await json<{ migrations: MigrationJson[] }>("migration", "list");
    const first = migrations.find((m) => m.state === "MIGRATION_STATE_SUCCEEDED");
    assert.ok(first);
    const one = await json<MigrationJson>("migration", "get", first.migrationId);
    assert.equal(one.migrationId, first.migrationId);
    assert.equal(one.target?.nodeId?.id, "node-02");
    const missing = await hvctl("migration", "get", "m-nope");
    assert.equal(missing.code, 5, missing.stderr);
    assert.match(missing.stderr, /not found/);
  });

  it("runs a migration without progress through the one waiting call (MigrateVM)", async () => {
    const r = await json<{ status: string; migrationId: string }>(
      "migration",
      "run",
      "--vm",
      "vm-001",
      "--target",
      "node-01",
      "--no-progress",
    );
    assert.equal(r.status, "STATUS_OK");
    const one = await json<MigrationJson>("migration", "get", r.migrationId);
    assert.equal(one.state, "MIGRATION_STATE_SUCCEEDED");
    assert.equal(
      (await json<{ nodeId?: { id?: string } }>("vm", "get", "vm-001")).nodeId?.id,
      "node-01",
    );
  });

  it("enrolls a machine with a one-time token (hvctl cert enroll), and the token is spent", async () => {
    const t = await json<{ token: string; caFingerprint: string }>(
      "token",
      "create",
      "--node",
      "hv-new",
    );
    const out = join(dir, "enrolled");
    const e = await json<{ subject: string }>(
      "cert",
      "enroll",
      "--token",
      t.token,
      "--fingerprint",
      t.caFingerprint,
      "--out",
      out,
    );
    assert.equal(e.subject, "hv-new");
    const again = await hvctl(
      "cert",
      "enroll",
      "--token",
      t.token,
      "--fingerprint",
      t.caFingerprint,
      "--out",
      join(dir, "again"),
    );
    assert.equal(again.code, 3, again.stderr);
  });

  it("starts detached and cancels: the vm stays on its source", async () => {
    const m = await json<MigrationJson>("migration", "run", "--vm", "vm-004", "--detach");
    assert.equal(m.source?.nodeId?.id, "node-02");
    const cancelled = await json<MigrationJson>("migration", "cancel", m.migrationId);
    assert.equal(cancelled.state, "MIGRATION_STATE_CANCELLED");
    const vm = await json<{ nodeId?: { id?: string } }>("vm", "get", "vm-004");
    assert.equal(vm.nodeId?.id, "node-02");
    const again = await hvctl("migration", "cancel", m.migrationId);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already finished/);
  });

  it("drains a node with progress and leaves it cordoned and empty", async () => {
    // vm-002 (ZFS) already moved to node-02 above; what is left on node-01 is on RBD.
    const r = await ok("node", "drain", "node-01", "--allow-downtime", "--max-parallel", "2");
    assert.match(r.stderr, /drain node-01: drained: \d+ vms moved/);
    const node = await json<{ summary: { cordoned: boolean }; vms?: unknown[] }>(
      "node",
      "get",
      "node-01",
    );
    assert.equal(node.summary.cordoned, true);
    assert.equal(node.vms?.length ?? 0, 0);
    await ok("node", "uncordon", "node-01");
    const bad = await hvctl("node", "drain", "node-01", "--max-parallel", "99");
    assert.equal(bad.code, 2);
  });

  it("refuses failover from a ready node, then fails over from the cut-off one after the fence delay", async () => {
    const early = await hvctl("failover", "vm-004");
    assert.equal(early.code, 1);
    assert.match(early.stderr, /node-02 is ready; migrate the vm instead/);
    await eventually(
      async () => {
        const n = await json<{ summary: { notReadyForMs?: string } }>("node", "get", "node-03");
        assert.ok(Number(n.summary.notReadyForMs ?? 0) > 2500, "node-03 never went NOT_READY");
      },
      { timeoutMs: 20_000, intervalMs: 250 },
    );
    // node-03 has fenced itself: its VMs show as stopped, never as running.
    const list = await json<{ vms: { id: string; state: string }[] }>(
      "vm",
      "list",
      "--node",
      "node-03",
    );
    assert.ok(list.vms.length > 0);
    for (const v of list.vms) assert.equal(v.state, "VM_STATE_STOPPED", v.id);
    const detail = await json<{ vms: { state: string }[] }>("node", "get", "node-03");
    assert.ok(detail.vms.every((v) => v.state === "VM_STATE_STOPPED"));
    assert.match((await ok("vm", "get", "vm-008")).stdout, /^state:\s+Stopped$/m);
    const vmId = "vm-007";
    const out = await json<{ target: string; migrationId: string }>("failover", vmId);
    assert.notEqual(out.target, "node-03");
    const vm = await json<{ nodeId?: { id?: string }; state: string }>("vm", "get", vmId);
    assert.equal(vm.nodeId?.id, out.target);
    assert.equal(vm.state, "VM_STATE_RUNNING");
    const human = await ok("failover", "vm-009");
    assert.match(
      human.stdout,
      /^restarted: .* \(migration [^)]+\)\n$/,
      "one whole line, newline included",
    );
  });

  it("removes a node only once it is drained and gone", async () => {
    // node-03 is NOT_READY, but not cordoned and still reports vm-008.
    const refused = await hvctl("node", "remove", "node-03");
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(
      refused.stderr,
      /node-03 cannot be removed: it is not cordoned .*; it still reports 1 vm/,
    );
    await ok("node", "cordon", "node-03");
    // vm-008 has no HA: node-03 would not stop it if it were only cut off.
    const unsure = await hvctl("failover", "vm-008");
    assert.notEqual(unsure.code, 0);
    assert.match(unsure.stderr, /has no HA.*hvctl node cordon node-03 --out-of-service/);
    const off = await ok(
      "node",
      "cordon",
      "node-03",
      "--out-of-service",
      "--reason",
      "powered off",
    );
    assert.equal(off.stdout, "node node-03 cordoned (out of service)\n");
    await ok("failover", "vm-008"); // its ZFS disk has a replica on node-01
    const removed = await ok("node", "remove", "node-03");
    assert.equal(removed.stdout, "node node-03 removed\n");
    const nodes = await json<{ nodes: { info: { id: { id: string } } }[] }>("node", "list");
    assert.deepEqual(
      nodes.nodes.map((n) => n.info.id.id),
      ["node-01", "node-02"],
    );
    assert.equal((await hvctl("node", "get", "node-03")).code, 5);
    assert.equal((await hvctl("node", "remove", "node-03")).code, 5);
  });
});
