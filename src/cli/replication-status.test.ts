import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { ReplicationState, ReplicationStatusSchema } from "../gen/debvisor/v1/storage_pb.js";
import { createStyle } from "./output.js";
import { replicationProgress, replicationSummary, statusFields } from "./replication-status.js";

const GIB = 1024n ** 3n;
const status = (init: MessageInitShape<typeof ReplicationStatusSchema>) =>
  create(ReplicationStatusSchema, { jobId: "j", ...init });

describe("replicationProgress", () => {
  it("shows a run snapshotting, then sending with bytes for the rate and ETA", () => {
    assert.deepEqual(replicationProgress(status({ state: ReplicationState.REPL_STATE_RUNNING })), {
      phase: "snapshotting",
      percent: 0,
    });
    assert.deepEqual(
      replicationProgress(
        status({
          state: ReplicationState.REPL_STATE_RUNNING,
          incremental: true,
          bytesTransferred: GIB,
          bytesExpected: 4n * GIB,
        }),
      ),
      {
        phase: "sending incremental stream",
        percent: 25,
        doneBytes: GIB,
        totalBytes: 4n * GIB,
      },
    );
  });
  it("ends a successful run at 100% in its sending phase, so no extra line is printed", () =>
    assert.deepEqual(replicationProgress(status({ state: ReplicationState.REPL_STATE_SUCCESS })), {
      phase: "sending full stream",
      percent: 100,
    }));
});

describe("replicationSummary", () => {
  it("says what a successful run sent, how and in what time", () =>
    assert.equal(
      replicationSummary(
        status({
          state: ReplicationState.REPL_STATE_SUCCESS,
          bytesTransferred: 3n * GIB,
          durationMs: 200_000n,
          incremental: true,
          baseSnapshotName: "repl-j-1",
          lastSnapshotName: "repl-j-2",
        }),
      ),
      "succeeded: sent 3.0 GiB (incremental from repl-j-1) in 3m20s; snapshot repl-j-2",
    ));
  it("says why a run failed and when the scheduler retries", () => {
    const s = replicationSummary(
      status({
        state: ReplicationState.REPL_STATE_FAILED,
        lastError: "target dataset has no snapshot in common with the source",
        lastErrorReason: "REPLICATION_DIVERGED",
        // 110 s ahead: whatever the sub-second part of now, it reads 109 or 110 s (120 s may read "2m").
        nextRun: { seconds: BigInt(Math.floor(Date.now() / 1000) + 110), nanos: 0 },
      }),
    );
    assert.match(
      s,
      /^failed: target dataset has no snapshot in common with the source \(REPLICATION_DIVERGED\); the scheduler retries in 1\d\ds$/,
    );
  });
});

describe("statusFields", () => {
  const plain = createStyle(false, {});
  const at = (seconds: number) => ({ seconds: BigInt(seconds), nanos: 0 });
  const now = 1_800_000_000_000;
  const reversed =
    "the vm moved from node-01 to node-02, the job's target: direction reversed, now node-02 -> node-01 from the common snapshot";
  // The store's record after a failover reversed the job and the next run was refused:
  // the bytes and send kind are still the last success's, the duration the failed run's.
  const divergedInit = {
    state: ReplicationState.REPL_STATE_FAILED,
    lastSnapshotName: "repl-j-20270115T080000Z",
    bytesTransferred: 0n,
    durationMs: 40n,
    incremental: true,
    baseSnapshotName: "repl-j-20270115T074500Z",
    lastSuccess: at(now / 1000 - 3600),
    successfulRuns: 4n,
    consecutiveFailures: 1,
    lastError:
      "the target node holds the dataset with no snapshot in common; remove it there first",
    lastErrorReason: "REPLICATION_DIVERGED",
    followed: reversed,
    followedAt: at(now / 1000 - 60),
    nextRun: at(now / 1000 + 60),
  };
  const diverged = status(divergedInit);

  it("leads a failed job with its error and what to do, before anything of an earlier run", () => {
    const lines = statusFields(diverged, plain, now).split("\n");
    assert.match(lines[1] ?? "", /^state:\s+Failed$/);
    assert.match(
      lines[2] ?? "",
      /^last error:\s+the target node holds the dataset with no snapshot in common; remove it there first \(REPLICATION_DIVERGED\)$/,
    );
    assert.match(lines[3] ?? "", /^what to do:\s+the target's copy holds data the source lacks/);
  });
  it("does not show a failed run as one that sent its bytes", () => {
    const text = statusFields(diverged, plain, now);
    assert.match(text, /^last run:\s+failed after 0s$/m);
    assert.doesNotMatch(text, /sent 0 B/);
  });
  it("marks a reversal no run has completed since as not done", () =>
    assert.match(
      statusFields(diverged, plain, now),
      /^followed its vm:\s+not done, no run has succeeded since: the vm moved .* from the common snapshot \(60s ago\)$/m,
    ));
  it("shows a reversal a run completed as it was, after a later failure too", () => {
    const later = status({ ...divergedInit, lastSuccess: at(now / 1000 - 30) });
    assert.match(
      statusFields(later, plain, now),
      /^followed its vm:\s+the vm moved .* from the common snapshot \(60s ago\)$/m,
    );
  });
  it("shows a successful job's last send and keeps the error line in its place", () => {
    const ok = status({
      ...divergedInit,
      state: ReplicationState.REPL_STATE_SUCCESS,
      lastError: "",
      lastErrorReason: "",
    });
    const lines = statusFields(ok, plain, now).split("\n");
    assert.match(lines[1] ?? "", /^state:\s+Succeeded$/);
    assert.match(
      lines[2] ?? "",
      /^last run:\s+sent 0 B \(incremental from repl-j-20270115T074500Z\) in 0s$/,
    );
    assert.match(lines[7] ?? "", /^last error:\s+-$/);
  });
});
