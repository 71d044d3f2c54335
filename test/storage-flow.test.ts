import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { StatusCode } from "../src/gen/debvisor/v1/common_pb.js";
import { ReplicationState, type ReplicationStatus } from "../src/gen/debvisor/v1/storage_pb.js";
import { eventually } from "./helpers/eventually.js";
import {
  failure,
  rbd,
  START,
  type StorageWorld,
  startStorageWorld,
  zfs,
} from "./helpers/storage-world.js";

const MIN = 60_000;
const names = (list: { snapshots: { ref?: { snapshotName: string } }[] }) =>
  list.snapshots.map((s) => s.ref?.snapshotName ?? "");

describe("storage workflows on the simulation, through the API", () => {
  let w: StorageWorld;
  before(async () => {
    w = await startStorageWorld();
  });
  after(async () => {
    await w.close();
  });

  it("snapshots, lists, prunes with a dry run and then for real", async () => {
    const disk = zfs("vm-a1-disk0");
    const made = await w.operator.createSnapshot({ dataset: disk, label: "before-upgrade" });
    assert.equal(made.status, StatusCode.STATUS_OK);
    assert.equal(made.snapshot?.snapshotName, "before-upgrade-20261122T140502Z");

    const listed = await w.operator.listSnapshots({ dataset: disk });
    assert.equal(listed.snapshots.length, 11);
    const newest = listed.snapshots.at(-1);
    assert.equal(newest?.ref?.snapshotName, "before-upgrade-20261122T140502Z");
    assert.equal(newest?.created?.seconds, BigInt(START / 1000));
    assert.deepEqual(newest?.labels, { label: "before-upgrade" });
    assert.ok(listed.snapshots.every((s) => s.sizeBytes > 0n && !s.held));
    const paged = await w.operator.listSnapshots({ dataset: disk, pageSize: 4 });
    const rest = await w.operator.listSnapshots({ dataset: disk, pageToken: paged.nextPageToken });
    assert.deepEqual([...names(paged), ...names(rest)], names(listed), "pages join up in order");

    const policy = { keepLast: 2, keepDailyDays: 0, keepWeeklyWeeks: 0 };
    const dry = await w.operator.pruneSnapshots({ dataset: disk, policy, dryRun: true });
    assert.equal(dry.dryRun, true);
    assert.equal(dry.removedCount, 9);
    assert.deepEqual(
      dry.removed.map((s) => s.ref?.snapshotName),
      names(listed).slice(0, 9),
    );
    assert.deepEqual(
      names(await w.operator.listSnapshots({ dataset: disk })),
      names(listed),
      "a dry run removes nothing",
    );

    const real = await w.operator.pruneSnapshots({ dataset: disk, policy });
    assert.equal(real.removedCount, 9);
    assert.deepEqual(
      names(await w.operator.listSnapshots({ dataset: disk })),
      names(listed).slice(9),
    );
  });

  it("plans a ZFS replication job and runs it twice: a full send, then an incremental one", async () => {
    const disk = zfs("vm-a1-disk0");
    const job = await w.operator.planZfsReplication({
      jobId: "vm-a1-to-n2",
      dataset: disk,
      source: { nodeId: { id: "n1" } },
      target: { nodeId: { id: "n2" } },
      policy: "interval=15m keep=2",
    });
    assert.equal(job.jobId, "vm-a1-to-n2");
    assert.equal(job.status?.state, ReplicationState.REPL_STATE_PENDING);
    assert.equal(job.createdBy, "ops");

    w.clock.advance(MIN);
    const first = await w.operator.runZfsReplication({ jobId: "vm-a1-to-n2" });
    assert.equal(first.state, ReplicationState.REPL_STATE_SUCCESS, first.lastError);
    assert.equal(first.incremental, false);
    assert.equal(first.bytesTransferred, 8n * 1024n ** 3n, "a full send moves the whole dataset");
    assert.equal(first.durationMs, 8000n, "8 GiB at the simulated 1 GiB/s");
    assert.match(first.lastSnapshotName, /^repl-vm-a1-to-n2-\d{8}T\d{6}Z$/);
    assert.equal(first.successfulRuns, 1n);

    w.clock.advance(16 * MIN);
    const secondStarted = w.clock.now();
    const second = await w.operator.runZfsReplication({ jobId: "vm-a1-to-n2" });
    assert.equal(second.state, ReplicationState.REPL_STATE_SUCCESS, second.lastError);
    assert.equal(second.incremental, true);
    assert.equal(second.baseSnapshotName, first.lastSnapshotName);
    assert.ok(second.bytesTransferred > 0n && second.bytesTransferred < first.bytesTransferred);
    assert.equal(second.successfulRuns, 2n);
    assert.equal(
      second.nextRun?.seconds,
      BigInt(Math.floor((secondStarted + 15 * MIN) / 1000)),
      "the next run is one interval after this one started",
    );

    const onTarget = await w.sim.listSnapshots(disk, new AbortController().signal, "n2");
    assert.deepEqual(
      onTarget?.map((s) => s.ref?.snapshotName),
      [first.lastSnapshotName, second.lastSnapshotName],
    );
    const status = await w.operator.getReplicationStatus({ jobId: "vm-a1-to-n2" });
    assert.equal(status.lastSnapshotName, second.lastSnapshotName);
    const jobs = await w.operator.listReplicationJobs({});
    assert.deepEqual(
      jobs.jobs.map((j) => [j.jobId, j.status?.state]),
      [["vm-a1-to-n2", ReplicationState.REPL_STATE_SUCCESS]],
    );
  });

  it("never deletes or prunes the snapshot a replication job needs as its next base", async () => {
    const disk = zfs("vm-a1-disk0");
    const base = (await w.operator.getReplicationStatus({ jobId: "vm-a1-to-n2" })).lastSnapshotName;
    const listed = await w.operator.listSnapshots({ dataset: disk });
    assert.deepEqual(
      listed.snapshots.filter((s) => s.replicationBase).map((s) => s.ref?.snapshotName),
      [base],
    );
    const refused = await failure(
      w.operator.deleteSnapshot({ snapshot: { dataset: disk, snapshotName: base } }),
    );
    assert.equal(refused.code, grpc.status.FAILED_PRECONDITION);
    assert.equal(refused.reason, "SNAPSHOT_IN_USE");

    w.clock.advance(MIN);
    await w.operator.createSnapshot({ dataset: disk, label: "after" });
    const pruned = await w.operator.pruneSnapshots({
      dataset: disk,
      policy: { keepLast: 1, keepDailyDays: 0, keepWeeklyWeeks: 0 },
    });
    assert.deepEqual(
      pruned.keptInUse.map((s) => s.ref?.snapshotName),
      [base],
    );
    const left = names(await w.operator.listSnapshots({ dataset: disk }));
    assert.deepEqual(left, [base, left.at(-1)]);
    assert.match(left.at(-1) ?? "", /^after-/);
  });

  it("streams a job's progress while it runs", async () => {
    const abort = new AbortController();
    const seen: ReplicationStatus[] = [];
    const watching = (async () => {
      for await (const s of w.operator.watchReplication(
        { jobId: "vm-a1-to-n2" },
        { signal: abort.signal },
      )) {
        seen.push(s);
        if (
          s.state === ReplicationState.REPL_STATE_SUCCESS &&
          seen.some((x) => x.state === ReplicationState.REPL_STATE_RUNNING)
        )
          abort.abort();
      }
    })().catch((err: grpc.ServiceError) => {
      if (err.code !== grpc.status.CANCELLED) throw err;
    });
    await eventually(() => seen.length > 0, { timeoutMs: 10_000 });
    w.clock.advance(20 * MIN);
    await w.operator.runZfsReplication({ jobId: "vm-a1-to-n2" });
    await watching;
    const states = seen.map((s) => s.state);
    assert.equal(states[0], ReplicationState.REPL_STATE_SUCCESS, "first the current state");
    assert.ok(states.includes(ReplicationState.REPL_STATE_RUNNING));
    assert.equal(states.at(-1), ReplicationState.REPL_STATE_SUCCESS);
  });

  it("makes an RBD template, clones it, and refuses to delete a template with clones", async () => {
    const image = rbd("vm-a1-disk1");
    const template = await w.operator.createRbdTemplateSnapshot({ image, label: "golden" });
    assert.equal(template.snapshot?.snapshotName, `golden-${stamp(w.clock.now())}`);
    const listed = await w.operator.listSnapshots({ dataset: image });
    assert.equal(listed.snapshots[0]?.protected, true);
    assert.equal(listed.snapshots[0]?.held, true);

    const clone = await w.operator.cloneRbdFromTemplate({
      templateSnapshot: template.snapshot,
      newImage: rbd("web-01-disk0"),
      tenant: "acme",
    });
    assert.equal(clone.status, StatusCode.STATUS_OK);
    assert.deepEqual(
      (await w.operator.listSnapshots({ dataset: rbd("web-01-disk0") })).snapshots,
      [],
      "the clone exists",
    );
    assert.deepEqual(
      (await w.acme.listSnapshots({ dataset: rbd("web-01-disk0") })).snapshots,
      [],
      "in tenant acme",
    );
    const refused = await failure(w.operator.deleteSnapshot({ snapshot: template.snapshot }));
    assert.equal(refused.code, grpc.status.FAILED_PRECONDITION);
    assert.equal(refused.reason, "SNAPSHOT_HAS_CLONES");
    assert.equal(
      (await w.operator.listSnapshots({ dataset: image })).snapshots.length,
      1,
      "still there",
    );
  });

  it("deletes a job, after which it is gone", async () => {
    const deleted = await w.operator.deleteReplicationJob({ jobId: "vm-a1-to-n2" });
    assert.equal(deleted.jobId, "vm-a1-to-n2");
    assert.equal(
      (await failure(w.operator.getReplicationStatus({ jobId: "vm-a1-to-n2" }))).reason,
      "REPLICATION_JOB_NOT_FOUND",
    );
    assert.deepEqual((await w.operator.listReplicationJobs({})).jobs, []);
  });
});

/** The UTC stamp of an instant, as snapshot names carry it. */
function stamp(ms: number): string {
  return `${new Date(ms).toISOString().slice(0, 19).replace(/[-:]/g, "")}Z`;
}
