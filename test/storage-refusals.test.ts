import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { ReplicationState } from "../src/gen/debvisor/v1/storage_pb.js";
import { eventually } from "./helpers/eventually.js";
import {
  failure,
  rbd,
  type StorageWorld,
  startStorageWorld,
  zfs,
} from "./helpers/storage-world.js";

const MIN = 60_000;
const signal = new AbortController().signal;
const n = (id: string) => ({ nodeId: { id } });

describe("storage refusals", () => {
  let w: StorageWorld;
  before(async () => {
    w = await startStorageWorld();
  });
  after(async () => {
    await w.close();
  });

  const refused = async (call: Promise<unknown>, code: grpc.status, reason: string) => {
    const f = await failure(call);
    assert.deepEqual([f.code, f.reason], [code, reason], f.details);
  };

  describe("snapshots", () => {
    it("fail-label: a label that is not a valid snapshot name part is INVALID_ARGUMENT", async () => {
      for (const label of ["-r", "a b", "x@y", "a/b", "z".repeat(81)])
        await refused(
          w.operator.createSnapshot({ dataset: zfs("vm-a1-disk0"), label }),
          grpc.status.INVALID_ARGUMENT,
          "INVALID_ARGUMENT",
        );
    });

    it("fail-same-second: the same label twice in one second is ALREADY_EXISTS", async () => {
      w.clock.advance(MIN);
      await w.operator.createSnapshot({ dataset: zfs("vm-a1-disk0"), label: "twice" });
      await refused(
        w.operator.createSnapshot({ dataset: zfs("vm-a1-disk0"), label: "twice" }),
        grpc.status.ALREADY_EXISTS,
        "SNAPSHOT_EXISTS",
      );
    });

    it("fail-missing: a dataset that does not exist is NOT_FOUND", async () => {
      await refused(
        w.operator.createSnapshot({ dataset: zfs("nope") }),
        grpc.status.NOT_FOUND,
        "DATASET_NOT_FOUND",
      );
      await refused(
        w.operator.listSnapshots({ dataset: rbd("nope") }),
        grpc.status.NOT_FOUND,
        "DATASET_NOT_FOUND",
      );
    });

    it("fail-delete: missing is NOT_FOUND, held is FAILED_PRECONDITION, and neither changes anything", async () => {
      const disk = zfs("vm-a1-disk0");
      await refused(
        w.operator.deleteSnapshot({
          snapshot: { dataset: disk, snapshotName: "nope-20260101T000000Z" },
        }),
        grpc.status.NOT_FOUND,
        "SNAPSHOT_NOT_FOUND",
      );
      const before = await w.operator.listSnapshots({ dataset: disk });
      const first = before.snapshots[0]?.ref?.snapshotName ?? "";
      w.sim.setHold({ dataset: disk, name: first, nodeId: "n1" }, true);
      await refused(
        w.operator.deleteSnapshot({ snapshot: { dataset: disk, snapshotName: first } }),
        grpc.status.FAILED_PRECONDITION,
        "SNAPSHOT_HELD",
      );
      const listed = await w.operator.listSnapshots({ dataset: disk });
      assert.equal(listed.snapshots.length, before.snapshots.length);
      assert.equal(listed.snapshots[0]?.held, true);
      assert.equal(listed.snapshots[0]?.userRefs, 1);

      const pruned = await w.operator.pruneSnapshots({
        dataset: disk,
        policy: { keepLast: 1, keepDailyDays: 0, keepWeeklyWeeks: 0 },
        dryRun: true,
      });
      assert.deepEqual(
        pruned.keptInUse.map((s) => s.ref?.snapshotName),
        [first],
        "prune keeps a held snapshot",
      );
      w.sim.setHold({ dataset: disk, name: first, nodeId: "n1" }, false);
    });

    it("fail-prune-nothing: a policy that keeps nothing is INVALID_ARGUMENT", async () => {
      await refused(
        w.operator.pruneSnapshots({ dataset: zfs("vm-a1-disk0"), policy: {} }),
        grpc.status.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
      );
    });
  });

  describe("replication", () => {
    const plan = (over: object = {}) => ({
      jobId: "g1",
      dataset: zfs("vm-g1-disk0"),
      source: n("n1"),
      target: n("n2"),
      policy: "interval=15m",
      ...over,
    });

    it("fail-plan: wrong backend, same node, unknown node, bad policy, missing dataset, from a replica", async () => {
      const bad = grpc.status.INVALID_ARGUMENT;
      await refused(
        w.operator.planZfsReplication(plan({ dataset: rbd("vm-a1-disk1") })),
        bad,
        "INVALID_ARGUMENT",
      );
      await refused(
        w.operator.planZfsReplication(plan({ target: n("n1") })),
        bad,
        "INVALID_ARGUMENT",
      );
      await refused(
        w.operator.planZfsReplication(plan({ policy: "every=5m" })),
        bad,
        "INVALID_ARGUMENT",
      );
      await refused(
        w.operator.planZfsReplication(plan({ jobId: "Bad_Id" })),
        bad,
        "INVALID_ARGUMENT",
      );
      await refused(
        w.operator.planZfsReplication(plan({ target: n("n9") })),
        grpc.status.NOT_FOUND,
        "NODE_NOT_FOUND",
      );
      await refused(
        w.operator.planZfsReplication(plan({ dataset: zfs("nope") })),
        grpc.status.NOT_FOUND,
        "DATASET_NOT_FOUND",
      );
      await refused(
        w.operator.planZfsReplication(plan({ source: n("n2"), target: n("n3") })),
        grpc.status.NOT_FOUND,
        "DATASET_NOT_FOUND",
      );
      // n3 holds a replica of vm-g1's disk, but vm-g1 runs on n1: from the replica, a run would
      // send stale data onto the live disk.
      const backwards = await failure(
        w.operator.planZfsReplication(plan({ source: n("n3"), target: n("n1") })),
      );
      assert.deepEqual(
        [backwards.code, backwards.reason, backwards.details],
        [
          grpc.status.FAILED_PRECONDITION,
          "REPLICATION_SOURCE_MOVED",
          "the dataset's vm runs on n1, not on n3: plan the replication from n1",
        ],
      );
      assert.deepEqual((await w.operator.listReplicationJobs({})).jobs, [], "nothing was stored");
    });

    it("plans idempotently, but refuses another plan under the id or a second job for the same target", async () => {
      const first = await w.operator.planZfsReplication(plan());
      const again = await w.operator.planZfsReplication(plan());
      assert.equal(again.created?.seconds, first.created?.seconds);
      await refused(
        w.operator.planZfsReplication(plan({ policy: "interval=1h" })),
        grpc.status.ALREADY_EXISTS,
        "REPLICATION_JOB_EXISTS",
      );
      await refused(
        w.operator.planZfsReplication(plan({ jobId: "g1-bis" })),
        grpc.status.ALREADY_EXISTS,
        "REPLICATION_JOB_EXISTS",
      );
      const generated = await w.operator.planZfsReplication(plan({ jobId: "", target: n("n3") }));
      assert.match(generated.jobId, /^repl-[0-9a-f]{10}$/);
    });

    it("keeps a deleted job's last snapshot as the base a new job for the same pair needs", async () => {
      const disk = zfs("vm-a1-disk0");
      const pair = (jobId: string) => plan({ jobId, dataset: disk, target: n("n3") });
      await w.operator.planZfsReplication(pair("old-pair"));
      const first = await w.operator.runZfsReplication({ jobId: "old-pair" });
      assert.equal(first.state, ReplicationState.REPL_STATE_SUCCESS, first.lastError);
      const base = first.lastSnapshotName;
      await w.operator.deleteReplicationJob({ jobId: "old-pair" });
      // Deleting and planning again is how a policy changes; the data on n3 stays.
      await w.operator.planZfsReplication(pair("new-pair"));
      w.clock.advance(MIN);
      await w.operator.createSnapshot({ dataset: disk, label: "later" });
      const pruned = await w.operator.pruneSnapshots({
        dataset: disk,
        policy: { keepLast: 1, keepDailyDays: 0, keepWeeklyWeeks: 0 },
      });
      assert.ok(
        pruned.keptInUse.some((x) => x.ref?.snapshotName === base),
        `the old base ${base} is kept`,
      );
      const run = await w.operator.runZfsReplication({ jobId: "new-pair" });
      assert.equal(run.state, ReplicationState.REPL_STATE_SUCCESS, run.lastError);
      assert.equal(run.incremental, true, "incremental from the old job's base, not diverged");
      await w.operator.deleteReplicationJob({ jobId: "new-pair" });
    });

    it("fail-running: a job cannot be run again or deleted while it runs", async () => {
      const open = w.closeGate();
      const running = w.operator.runZfsReplication({ jobId: "g1" });
      try {
        await eventually(
          async () =>
            (await w.operator.getReplicationStatus({ jobId: "g1" })).state ===
            ReplicationState.REPL_STATE_RUNNING,
          { timeoutMs: 10_000, intervalMs: 10 },
        );
        await refused(
          w.operator.runZfsReplication({ jobId: "g1" }),
          grpc.status.FAILED_PRECONDITION,
          "REPLICATION_RUNNING",
        );
        await refused(
          w.operator.deleteReplicationJob({ jobId: "g1" }),
          grpc.status.FAILED_PRECONDITION,
          "REPLICATION_RUNNING",
        );
        // The snapshot being sent is in use: it cannot be deleted from under the send.
        const { snapshots } = await w.operator.listSnapshots({ dataset: zfs("vm-g1-disk0") });
        const sending = snapshots.at(-1);
        assert.ok(sending?.replicationBase, "the snapshot being sent is marked in use");
        await refused(
          w.operator.deleteSnapshot({
            snapshot: {
              dataset: zfs("vm-g1-disk0"),
              snapshotName: sending?.ref?.snapshotName ?? "",
            },
          }),
          grpc.status.FAILED_PRECONDITION,
          "SNAPSHOT_IN_USE",
        );
      } finally {
        open();
      }
      assert.equal((await running).state, ReplicationState.REPL_STATE_SUCCESS);
    });

    it("records a run onto a target holding a diverged copy as FAILED with the reason, and retries later", async () => {
      const jobId =
        (await w.operator.listReplicationJobs({})).jobs.find(
          (j) => j.plan?.target?.nodeId?.id === "n3",
        )?.jobId ?? "";
      const before = await w.sim.listSnapshots(zfs("vm-g1-disk0"), signal, "n1");
      const status = await w.operator.runZfsReplication({ jobId });
      assert.equal(status.state, ReplicationState.REPL_STATE_FAILED);
      assert.equal(status.lastErrorReason, "REPLICATION_DIVERGED");
      assert.equal(status.consecutiveFailures, 1);
      assert.ok(Number(status.nextRun?.seconds) * 1000 > w.clock.now(), "a retry is scheduled");
      assert.deepEqual(
        await w.sim.listSnapshots(zfs("vm-g1-disk0"), signal, "n1"),
        before,
        "the failed run left nothing behind",
      );
    });

    it("fail-unknown: running, reading, watching or deleting an unknown job is NOT_FOUND", async () => {
      const nf = grpc.status.NOT_FOUND;
      await refused(
        w.operator.runZfsReplication({ jobId: "nope" }),
        nf,
        "REPLICATION_JOB_NOT_FOUND",
      );
      await refused(
        w.operator.getReplicationStatus({ jobId: "nope" }),
        nf,
        "REPLICATION_JOB_NOT_FOUND",
      );
      await refused(
        w.operator.deleteReplicationJob({ jobId: "nope" }),
        nf,
        "REPLICATION_JOB_NOT_FOUND",
      );
      const stream = w.operator.watchReplication({ jobId: "nope" })[Symbol.asyncIterator]();
      await refused(stream.next(), nf, "REPLICATION_JOB_NOT_FOUND");
    });
  });

  describe("RBD templates and clones", () => {
    it("fail-template-zfs: a template of a ZFS dataset is INVALID_ARGUMENT", async () => {
      await refused(
        w.operator.createRbdTemplateSnapshot({ image: zfs("vm-a1-disk0") }),
        grpc.status.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
      );
    });

    it("fail-clone: from an unprotected or missing snapshot, or onto an existing image", async () => {
      w.clock.advance(MIN);
      const image = rbd("vm-a1-disk1");
      const plain = await w.operator.createSnapshot({ dataset: image, label: "plain" });
      await refused(
        w.operator.cloneRbdFromTemplate({ templateSnapshot: plain.snapshot, newImage: rbd("c1") }),
        grpc.status.FAILED_PRECONDITION,
        "SNAPSHOT_NOT_PROTECTED",
      );
      await refused(
        w.operator.cloneRbdFromTemplate({
          templateSnapshot: { dataset: image, snapshotName: "nope-20260101T000000Z" },
          newImage: rbd("c1"),
        }),
        grpc.status.NOT_FOUND,
        "SNAPSHOT_NOT_FOUND",
      );
      const template = await w.operator.createRbdTemplateSnapshot({ image });
      await refused(
        w.operator.cloneRbdFromTemplate({ templateSnapshot: template.snapshot, newImage: image }),
        grpc.status.ALREADY_EXISTS,
        "DATASET_EXISTS",
      );
    });
  });

  describe("tenants", () => {
    it("answers another tenant's dataset exactly like a missing one, on every method", async () => {
      // globex is an operator confined to tenant globex; vm-a1's disks are acme's.
      const calls = (disk: string, image: string) => [
        w.globex.listSnapshots({ dataset: zfs(disk) }),
        w.globex.createSnapshot({ dataset: zfs(disk) }),
        w.globex.deleteSnapshot({
          snapshot: { dataset: zfs(disk), snapshotName: "daily-20261122T000000Z" },
        }),
        w.globex.pruneSnapshots({ dataset: zfs(disk), policy: { keepLast: 1 }, dryRun: true }),
        w.globex.planZfsReplication({ dataset: zfs(disk), source: n("n1"), target: n("n2") }),
        w.globex.createRbdTemplateSnapshot({ image: rbd(image) }),
        w.globex.cloneRbdFromTemplate({
          templateSnapshot: { dataset: rbd(image), snapshotName: "t-20261122T000000Z" },
          newImage: rbd("globex-x"),
        }),
      ];
      const hidden = await Promise.all(calls("vm-a1-disk0", "vm-a1-disk1").map(failure));
      const absent = await Promise.all(calls("vm-zz-disk0", "vm-zz-disk1").map(failure));
      assert.deepEqual(hidden, absent);
      assert.ok(
        hidden.every((f) => f.code === grpc.status.NOT_FOUND && f.reason === "DATASET_NOT_FOUND"),
      );
    });

    it("hides other tenants' replication jobs", async () => {
      await w.operator.planZfsReplication({
        jobId: "a1",
        dataset: zfs("vm-a1-disk0"),
        source: n("n1"),
        target: n("n2"),
      });
      const seen = (await w.globex.listReplicationJobs({})).jobs.map((j) => j.jobId);
      assert.ok(seen.includes("g1") && !seen.includes("a1"), seen.join());
      await refused(
        w.globex.getReplicationStatus({ jobId: "a1" }),
        grpc.status.NOT_FOUND,
        "REPLICATION_JOB_NOT_FOUND",
      );
      await refused(
        w.globex.runZfsReplication({ jobId: "a1" }),
        grpc.status.NOT_FOUND,
        "REPLICATION_JOB_NOT_FOUND",
      );
      await refused(
        w.globex.deleteReplicationJob({ jobId: "a1" }),
        grpc.status.NOT_FOUND,
        "REPLICATION_JOB_NOT_FOUND",
      );
      assert.ok(
        (await w.operator.listReplicationJobs({})).jobs.some((j) => j.jobId === "a1"),
        "still there",
      );
    });

    it("scopes job ids per tenant: another tenant's job id answers exactly like an absent one", async () => {
      await w.operator.planZfsReplication({
        jobId: "a2",
        dataset: zfs("vm-a1-disk0"),
        source: n("n1"),
        target: n("n3"),
      });
      // globex's own dataset already goes to n2 (job g1): the same plan under acme's id and under a free one.
      const taken = { dataset: zfs("vm-g1-disk0"), source: n("n1"), target: n("n2") };
      const hidden = await failure(w.globex.planZfsReplication({ ...taken, jobId: "a2" }));
      const absent = await failure(w.globex.planZfsReplication({ ...taken, jobId: "zz-absent" }));
      assert.deepEqual(hidden, absent);
      await refused(
        w.globex.getReplicationStatus({ jobId: "a2" }),
        grpc.status.NOT_FOUND,
        "REPLICATION_JOB_NOT_FOUND",
      );
      const acmeJob = await w.operator.getReplicationStatus({ jobId: "a2" });
      assert.equal(acmeJob.jobId, "a2", "acme's job is untouched");
    });

    it("lets a tenant name its own job like another tenant's, each seeing only its own", async () => {
      // Free globex's dataset's way to n3 (an earlier test planned a job there).
      for (const j of (await w.operator.listReplicationJobs({})).jobs)
        if (j.plan?.dataset?.name === "vm-g1-disk0" && j.plan.target?.nodeId?.id === "n3")
          await w.operator.deleteReplicationJob({ jobId: j.jobId });
      const mine = await w.globex.planZfsReplication({
        jobId: "a2",
        dataset: zfs("vm-g1-disk0"),
        source: n("n1"),
        target: n("n3"),
      });
      assert.equal(mine.jobId, "a2");
      assert.equal((await w.globex.getReplicationStatus({ jobId: "a2" })).jobId, "a2");
      const all = (await w.operator.listReplicationJobs({})).jobs.map((j) => j.jobId);
      assert.ok(all.includes("a2") && all.includes("globex:a2"), all.join());
    });

    it("does not let a tenant squat a longer tenant's names (acme may not make acme-corp-...)", async () => {
      const image = rbd("vm-a1-disk1");
      w.clock.advance(MIN);
      const template = await w.operator.createRbdTemplateSnapshot({ image, label: "corp-golden" });
      await w.operator.cloneRbdFromTemplate({
        templateSnapshot: template.snapshot,
        newImage: rbd("acme-corp-base"),
        tenant: "acme-corp",
      });
      await refused(
        w.acme.cloneRbdFromTemplate({
          templateSnapshot: template.snapshot,
          newImage: rbd("acme-corp-db"),
        }),
        grpc.status.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
      );
      await refused(
        w.acme.listSnapshots({ dataset: rbd("acme-corp-db") }),
        grpc.status.NOT_FOUND,
        "DATASET_NOT_FOUND",
      );
      await w.acme.cloneRbdFromTemplate({
        templateSnapshot: template.snapshot,
        newImage: rbd("acme-corpus-1"),
      });
      // A tenant the access policy names owns its name before it owns anything else.
      await refused(
        w.acme.cloneRbdFromTemplate({
          templateSnapshot: template.snapshot,
          newImage: rbd("acme-west-db"),
        }),
        grpc.status.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
      );
    });

    it("clones into the caller's own tenant only, under its name prefix", async () => {
      const image = rbd("vm-a1-disk1");
      w.clock.advance(MIN);
      const template = await w.acme.createRbdTemplateSnapshot({ image, label: "acme-golden" });
      await refused(
        w.acme.cloneRbdFromTemplate({
          templateSnapshot: template.snapshot,
          newImage: rbd("web-9"),
        }),
        grpc.status.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
      );
      await refused(
        w.acme.cloneRbdFromTemplate({
          templateSnapshot: template.snapshot,
          newImage: rbd("acme-web-9"),
          tenant: "globex",
        }),
        grpc.status.PERMISSION_DENIED,
        "PERMISSION_DENIED",
      );
      await w.acme.cloneRbdFromTemplate({
        templateSnapshot: template.snapshot,
        newImage: rbd("acme-web-9"),
      });
      assert.deepEqual((await w.acme.listSnapshots({ dataset: rbd("acme-web-9") })).snapshots, []);
      await refused(
        w.globex.listSnapshots({ dataset: rbd("acme-web-9") }),
        grpc.status.NOT_FOUND,
        "DATASET_NOT_FOUND",
      );
    });

    it("refuses roles without the permission: a developer may not prune or plan", async () => {
      await refused(
        w.acme.pruneSnapshots({ dataset: zfs("vm-a1-disk0"), policy: { keepLast: 1 } }),
        grpc.status.PERMISSION_DENIED,
        "PERMISSION_DENIED",
      );
      await refused(
        w.acme.deleteReplicationJob({ jobId: "g1" }),
        grpc.status.PERMISSION_DENIED,
        "PERMISSION_DENIED",
      );
    });
  });
});
