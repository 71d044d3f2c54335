import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import {
  createReplicaCatalog,
  createReplicationJobs,
  createReplicationRunner,
  createReplicationScheduler,
  type ReplicationJobs,
  type ReplicationRunnerOptions,
} from "../src/cluster/index.js";
import {
  createManualClock,
  type Logger,
  type ManualClock,
  silentLogger,
} from "../src/core/index.js";
import { createSimulatedStorage, datasetKey, type SimulatedStorage } from "../src/drivers/index.js";
import { ReplicationJobRecordSchema } from "../src/gen/debvisor/store/v1/storage_records_pb.js";
import { ReplicationState } from "../src/gen/debvisor/v1/storage_pb.js";
import { createEtcdStore, createSqliteStore, type KvStore } from "../src/store/index.js";
import { type EtcdServer, startEtcd } from "./helpers/etcd-server.js";
import { eventually } from "./helpers/eventually.js";
import { START, zfs } from "./helpers/storage-world.js";

const GIB = 1024 ** 3;
const MIN = 60_000;
const signal = new AbortController().signal;

const sqlite = () =>
  createSqliteStore({
    path: join(mkdtempSync(join(tmpdir(), "dv-repl-")), "state.db"),
    logger: silentLogger,
  });

/** Shared storage of the simulated cluster; sends advance the clock and take a little real time. */
function storage(
  clock: ManualClock,
  disks: string[],
  onSend?: Parameters<typeof createSimulatedStorage>[0]["onSend"],
) {
  return createSimulatedStorage({
    clock,
    onSend,
    sleep: async (ms) => {
      clock.advance(ms);
      await new Promise((r) => setTimeout(r, 1));
    },
    datasets: disks.map((name) => ({ dataset: zfs(name), nodeId: "n1", sizeBytes: 2 * GIB })),
  });
}

async function planJob(
  jobs: ReplicationJobs,
  disk: string,
  now: number,
  intervalMs = 15 * MIN,
  { source = "n1", target = "n2" } = {},
) {
  await jobs.create(
    create(ReplicationJobRecordSchema, {
      jobId: `${disk}-to-${target}`,
      plan: {
        jobId: `${disk}-to-${target}`,
        dataset: zfs(disk),
        source: { nodeId: { id: source } },
        target: { nodeId: { id: target } },
      },
      intervalMs: BigInt(intervalMs),
      keepSnapshots: 2,
      createdAtMs: BigInt(now),
    }),
    now,
  );
}

/** One job (vm-1-disk0 from n1 to n2, every 15 min) with a runner and a scheduler. */
async function oneJob(
  store: KvStore,
  sim: SimulatedStorage,
  clock: ManualClock,
  options: Partial<ReplicationRunnerOptions>,
) {
  const jobs = createReplicationJobs(store);
  await planJob(jobs, "vm-1-disk0", clock.now());
  const runner = createReplicationRunner({
    store,
    jobs,
    storage: sim,
    clock,
    logger: silentLogger,
    ...options,
  });
  return {
    jobs,
    runner,
    scheduler: createReplicationScheduler({ jobs, runner, clock, logger: silentLogger }),
  };
}

/** A logger that counts successful runs. */
function counting(): Logger & { succeeded: number } {
  const log = {
    succeeded: 0,
    debug() {},
    info(_o: object, msg?: string) {
      if (msg === "replication run succeeded") log.succeeded += 1;
    },
    warn() {},
    error() {},
    child: () => log,
  };
  return log;
}

/** One job whose dataset belongs to a VM on `vm.node` (n1 until the test moves it), run once. */
async function jobWithVm() {
  const store = sqlite();
  const clock = createManualClock(START);
  const sim = storage(clock, ["vm-1-disk0"]);
  const vm = { node: "n1" };
  const { jobs, scheduler } = await oneJob(store, sim, clock, { ownerNode: async () => vm.node });
  await scheduler.tick();
  return { store, clock, sim, jobs, scheduler, vm };
}

describe("the replication scheduler", () => {
  it("runs a job again within one second, and after the clock stepped back: each snapshot is named after the job's newest, never a name pruning freed", async () => {
    // Snapshot names go to the second. A second run in the same second (a manual run just after
    // a scheduled one) failed SNAPSHOT_EXISTS; sends here take no clock time at all. The job
    // keeps 2 snapshots, so pruning frees names a run in that second could take again.
    const store = sqlite();
    const clock = createManualClock(START);
    const sim = createSimulatedStorage({
      clock,
      sleep: async () => {},
      datasets: [{ dataset: zfs("vm-1-disk0"), nodeId: "n1", sizeBytes: 2 * GIB }],
    });
    const told: string[] = [];
    const { runner } = await oneJob(store, sim, clock, {
      events: { emit: (e) => told.push(`${e.type}: ${e.message}`) },
    });
    const taken: string[] = [];
    const run = async () => {
      const s = await runner.run("vm-1-disk0-to-n2");
      assert.equal(s?.state, ReplicationState.REPL_STATE_SUCCESS, s?.lastError);
      taken.push(s?.lastSnapshotName ?? "");
      return s;
    };
    await run();
    for (let i = 0; i < 3; i++) assert.equal((await run())?.incremental, true);
    clock.advance(-10_000);
    await run();
    // Each run's event says what it sent in a unit that shows it (not "0.0 GiB").
    assert.match(told[0] ?? "", /^ReplicationSucceeded: sent 2\.0 GiB \(full\)/);
    assert.match(
      told[1] ?? "",
      /^ReplicationSucceeded: sent \d+(\.\d)? (B|KiB|MiB) \(incremental from /,
    );
    const sorted = [...taken].sort();
    assert.deepEqual(taken, sorted, "named in the order taken");
    assert.equal(new Set(taken).size, taken.length, "no name taken twice");
    for (const node of ["n1", "n2"]) {
      const names = (await sim.listSnapshots(zfs("vm-1-disk0"), signal, node))?.map(
        (x) => x.ref?.snapshotName,
      );
      assert.deepEqual(names, taken.slice(-2), `${node} keeps the newest two`);
    }
  });

  it("follows its vm to the job's target: the job reverses and the next run is incremental", async () => {
    const { clock, sim, jobs, scheduler, vm } = await jobWithVm();
    const first = (await jobs.get("vm-1-disk0-to-n2"))?.status;
    assert.equal(first?.state, ReplicationState.REPL_STATE_SUCCESS);
    // The vm migrated to the job's target: n2 is where it now writes.
    vm.node = "n2";
    clock.advance(20 * MIN);
    await scheduler.tick();
    const job = await jobs.get("vm-1-disk0-to-n2");
    const s = job?.status;
    assert.equal(s?.state, ReplicationState.REPL_STATE_SUCCESS, s?.lastError);
    assert.equal(job?.job.plan?.source?.nodeId?.id, "n2");
    assert.equal(job?.job.plan?.target?.nodeId?.id, "n1");
    assert.equal(s?.incremental, true, "from the common snapshot, not a full send");
    assert.equal(s?.baseSnapshotName, first?.lastSnapshotName);
    assert.equal(s?.successfulRuns, 2n);
    assert.match(s?.followed ?? "", /moved from n1 to n2.*direction reversed, now n2 -> n1/);
    assert.ok(s !== undefined && s.followedAtMs > 0n);
    const onN1 = (await sim.listSnapshots(zfs("vm-1-disk0"), signal, "n1"))?.map(
      (x) => x.ref?.snapshotName,
    );
    assert.ok(onN1?.includes(s?.lastSnapshotName), "the new snapshot arrived on the old source");
    assert.equal((await jobs.forTarget(zfs("vm-1-disk0"), "n1"))?.job.jobId, "vm-1-disk0-to-n2");
    assert.equal(await jobs.forTarget(zfs("vm-1-disk0"), "n2"), undefined, "target key moved");
  });

  it("follows its vm to a third node, and stays put when another job already sends there", async () => {
    const { store, clock, jobs, scheduler, vm } = await jobWithVm();
    vm.node = "n3";
    clock.advance(20 * MIN);
    await scheduler.tick();
    const job = await jobs.get("vm-1-disk0-to-n2");
    assert.equal(job?.job.plan?.source?.nodeId?.id, "n3");
    assert.equal(job?.job.plan?.target?.nodeId?.id, "n2");
    assert.match(job?.status.followed ?? "", /source re-pointed, now n3 -> n2/);
    // A second job already sends the dataset to n3: reversing the first onto n3 is refused.
    await planJob(createReplicationJobs(store), "vm-1-disk0", clock.now(), 15 * MIN, {
      source: "n2",
      target: "n3",
    });
    vm.node = "n2";
    clock.advance(20 * MIN);
    await scheduler.tick();
    const after = await jobs.get("vm-1-disk0-to-n2");
    assert.equal(after?.status.lastErrorReason, "REPLICATION_SOURCE_MOVED");
    assert.match(
      after?.status.lastError ?? "",
      /now runs on n2, and another job already sends it to n3/,
    );
    assert.equal(after?.job.plan?.source?.nodeId?.id, "n3", "unchanged");
  });

  it("retries a replication that fails halfway, with growing backoff, until it succeeds", async () => {
    const store = sqlite();
    const clock = createManualClock(START);
    let sends = 0;
    const sim = storage(clock, ["vm-1-disk0"], (e) => {
      if (e.type === "start") sends += 1;
    });
    sim.injectFault({ op: "send", afterFraction: 0.5, times: 2 });
    const { jobs, scheduler } = await oneJob(store, sim, clock, { retryBaseMs: MIN });
    const status = async () => (await jobs.get("vm-1-disk0-to-n2"))?.status;

    await scheduler.tick();
    let s = await status();
    assert.equal(s?.state, ReplicationState.REPL_STATE_FAILED);
    assert.equal(s?.lastErrorReason, "STORAGE_UNAVAILABLE");
    assert.equal(s?.consecutiveFailures, 1);
    assert.equal(s?.bytesTransferred, BigInt(GIB), "it failed halfway through 2 GiB");
    assert.equal(Number(s?.nextRunAtMs), clock.now() + MIN, "first retry after a minute");
    assert.equal(
      await sim.listSnapshots(zfs("vm-1-disk0"), signal, "n2"),
      undefined,
      "nothing arrived",
    );
    assert.deepEqual(
      await sim.listSnapshots(zfs("vm-1-disk0"), signal, "n1"),
      [],
      "no unsent snapshot left",
    );

    await scheduler.tick();
    assert.equal(sends, 1, "not due yet: no run");
    clock.advance(MIN);
    await scheduler.tick();
    s = await status();
    assert.equal(s?.consecutiveFailures, 2);
    assert.equal(Number(s?.nextRunAtMs), clock.now() + 2 * MIN, "the backoff doubles");

    clock.advance(2 * MIN - 1);
    await scheduler.tick();
    assert.equal(sends, 2, "still backing off");
    clock.advance(1);
    const started = clock.now();
    await scheduler.tick();
    s = await status();
    assert.equal(sends, 3);
    assert.equal(s?.state, ReplicationState.REPL_STATE_SUCCESS, s?.lastError);
    assert.equal(s?.consecutiveFailures, 0);
    assert.equal(s?.bytesTransferred, BigInt(2 * GIB));
    assert.equal(s?.successfulRuns, 1n);
    assert.equal(Number(s?.nextRunAtMs), started + 15 * MIN, "back on its interval");
    assert.equal(await createReplicaCatalog({ store }).hasReplica(zfs("vm-1-disk0"), "n2"), true);
    await scheduler.stop();
    await store.close();
  });

  it("stops runs in progress when stopped, recording them as failed and freeing the job", async () => {
    const store = sqlite();
    const clock = createManualClock(START);
    const closing = new AbortController();
    const sim = createSimulatedStorage({
      clock,
      sleep: (ms, s) =>
        new Promise((resolve, reject) => {
          clock.advance(ms);
          const t = setTimeout(resolve, 50);
          s.addEventListener("abort", () => {
            clearTimeout(t);
            reject(new Error("aborted"));
          });
        }),
      datasets: [{ dataset: zfs("vm-1-disk0"), nodeId: "n1", sizeBytes: 20 * GIB }],
    });
    const { jobs, scheduler } = await oneJob(store, sim, clock, { closing: closing.signal });
    const ticked = scheduler.tick();
    await eventually(async () => (await jobs.get("vm-1-disk0-to-n2"))?.lock !== undefined, {
      intervalMs: 10,
    });
    closing.abort();
    await scheduler.stop();
    await ticked;
    const job = await jobs.get("vm-1-disk0-to-n2");
    assert.equal(job?.status.state, ReplicationState.REPL_STATE_FAILED);
    assert.equal(job?.lock, undefined, "the run lock is released");
    await store.close();
  });
});

/**
 * Two schedulers, each with its own runner (as two daemons have), on stores
 * that reach the same data: every job must run exactly once per interval,
 * never twice at once, and both schedulers must get work.
 */
async function neverTheSameJobTwice(storeA: KvStore, storeB: KvStore, rounds: number) {
  const clock = createManualClock(START);
  const disks = ["vm-1-disk0", "vm-2-disk0", "vm-3-disk0", "vm-4-disk0"];
  const active = new Set<string>();
  const overlaps: string[] = [];
  const sim = storage(clock, disks, (e) => {
    const key = datasetKey(e.options.dataset);
    if (e.type === "end") active.delete(key);
    else if (active.has(key)) overlaps.push(key);
    else active.add(key);
  });
  const jobsA = createReplicationJobs(storeA);
  for (const d of disks) await planJob(jobsA, d, clock.now(), MIN);
  const logA = counting();
  const logB = counting();
  const scheduler = (store: KvStore, logger: Logger, holder: string) => {
    const jobs = createReplicationJobs(store);
    const runner = createReplicationRunner({ store, jobs, storage: sim, clock, logger, holder });
    return createReplicationScheduler({ jobs, runner, clock, logger, maxConcurrentRuns: 3 });
  };
  const a = scheduler(storeA, logA, "daemon-a");
  const b = scheduler(storeB, logB, "daemon-b");
  for (let round = 0; round < rounds; round++) {
    await Promise.all([a.tick(), b.tick(), a.tick(), b.tick()]);
    clock.advance(MIN + 1000);
  }
  await Promise.all([a.stop(), b.stop()]);
  assert.deepEqual(overlaps, [], "a job ran twice at the same time");
  const runs = (await jobsA.list()).map((j) => [j.job.jobId, j.status.successfulRuns]);
  assert.deepEqual(
    runs,
    disks.map((d) => [`${d}-to-n2`, BigInt(rounds)]),
    "each job ran once per interval",
  );
  assert.equal(logA.succeeded + logB.succeeded, disks.length * rounds);
  assert.ok(
    logA.succeeded > 0 && logB.succeeded > 0,
    `both daemons ran jobs (${logA.succeeded}, ${logB.succeeded})`,
  );
}

describe("two daemons sharing one store", () => {
  it("never run the same replication job at once (one SQLite file)", async () => {
    const store = sqlite();
    await neverTheSameJobTwice(store, store, 8);
    await store.close();
  });

  let etcd: EtcdServer | undefined;
  after(async () => etcd?.stop());
  it("never run the same replication job at once (etcd, one client each)", async (t) => {
    etcd = await startEtcd();
    if (etcd === undefined) {
      console.log("!!! etcd is not installed: the two-daemon etcd replication test is SKIPPED.");
      t.skip("etcd not installed");
      return;
    }
    const prefix = `/repl-${randomBytes(4).toString("hex")}/`;
    const a = createEtcdStore({ endpoints: [etcd.endpoint], prefix });
    const b = createEtcdStore({ endpoints: [etcd.endpoint], prefix });
    await neverTheSameJobTwice(a, b, 4);
    await Promise.all([a.close(), b.close()]);
  });
});
