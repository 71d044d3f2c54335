import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { ReplicationState, ReplicationStatusSchema } from "../gen/debvisor/v1/storage_pb.js";
import { UsageError } from "./cli-errors.js";
import { parseBandwidth, replicationProgress, replicationSummary } from "./replication-command.js";

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

describe("parseBandwidth", () => {
  for (const [text, policy] of [
    ["50M", "50M"],
    ["50MiB", "50M"],
    ["1.5G", "1536M"],
    ["2G/s", "2G"],
    ["800k", "800K"],
    ["1000", "1000"],
    ["12345678", "12056K"],
  ] as const)
    it(`ok-${text} is bwlimit=${policy}`, () => assert.equal(parseBandwidth(text), policy));
  for (const text of ["", "0", "fast", "50MB", "-5M", "50 parsecs"])
    it(`fail-"${text}"`, () => assert.throws(() => parseBandwidth(text), UsageError));
});
