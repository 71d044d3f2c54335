import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  callCounts,
  grpcFrame,
  grpcMessage,
  median,
  metricValue,
  parseH2loadLog,
  parseH2loadSummary,
  percentile,
  roundOrder,
  runProblems,
} from "./bench-support.js";

/** h2load 1.52's summary, as printed for a real run. */
const H2LOAD_OUT = `starting benchmark...
spawning thread #0: 2 total client(s). 100 total requests
TLS Protocol: TLSv1.3
Application protocol: h2
progress: 100% done

finished in 29.13ms, 3433.12 req/s, 192.44KB/s
requests: 100 total, 100 started, 98 done, 97 succeeded, 1 failed, 1 errored, 0 timeout
status codes: 97 2xx, 0 3xx, 0 4xx, 0 5xx
                     min         max         mean         sd        +/- sd
time for request:      818us      9.30ms      1.78ms      1.81ms    95.00%
time for connect:      950us     11.29ms      7.62ms      5.19ms   100.00%
time to 1st byte:    12.67ms     13.25ms     12.96ms       411us   100.00%
`;

describe("h2load output", () => {
  it("reads throughput, done, succeeded and failed requests, and the mean connect time", () => {
    assert.deepEqual(parseH2loadSummary(H2LOAD_OUT), {
      reqPerSec: 3433.12,
      done: 98,
      succeeded: 97,
      failed: 1,
      connectMeanMs: 7.62,
    });
    assert.equal(
      parseH2loadSummary(H2LOAD_OUT.replace("7.62ms", "620us")).connectMeanMs.toFixed(2),
      "0.62",
    );
  });

  it("refuses output without a summary instead of reporting zeros", () => {
    assert.throws(() => parseH2loadSummary("starting benchmark...\nno protocol negotiated\n"), {
      message: /cannot parse h2load output/,
    });
  });

  it("turns the per-request log's microseconds into sorted milliseconds", () => {
    const log =
      "1795334248624244\t200\t9272\n1795334248624246\t200\t818\n1795334248624247\t200\t1500\n";
    assert.deepEqual(parseH2loadLog(log), [0.818, 1.5, 9.272]);
  });
});

describe("statistics", () => {
  it("takes nearest-rank percentiles of sorted values", () => {
    const xs = Array.from({ length: 200 }, (_, i) => i + 1);
    assert.equal(percentile(xs, 0.5), 101);
    assert.equal(percentile(xs, 0.99), 199);
    assert.equal(percentile([7], 0.99), 7);
    assert.equal(percentile([], 0.5), 0);
  });

  it("takes the median of odd and even counts, in any order", () => {
    assert.equal(median([3, 1, 2]), 2);
    assert.equal(median([4, 1, 3, 2]), 2.5);
  });

  it("rotates the variants each round so each runs first once every n rounds", () => {
    const v = ["a", "b", "c"];
    assert.deepEqual(
      [0, 1, 2, 3].map((r) => roundOrder(v, r).join("")),
      ["abc", "bca", "cab", "abc"],
    );
  });
});

describe("gRPC frames", () => {
  it("frames a message and reads it back", () => {
    const frame = grpcFrame(Buffer.from("hello"));
    assert.deepEqual([...frame.subarray(0, 5)], [0, 0, 0, 0, 5]);
    assert.equal(String(grpcMessage(frame)), "hello");
  });

  it("says what is wrong with a body that is not one whole uncompressed frame", () => {
    assert.match(String(grpcMessage(Buffer.from([0, 0]))), /not a gRPC frame/);
    assert.match(String(grpcMessage(Buffer.from([1, 0, 0, 0, 0]))), /compressed/);
    assert.match(
      String(grpcMessage(Buffer.from([0, 0, 0, 0, 9, 1]))),
      /announces 9 bytes but carries 1/,
    );
  });
});

const METRICS = `# HELP debvisor_rpc_calls_total RPC calls finished, by method and gRPC code.
# TYPE debvisor_rpc_calls_total counter
debvisor_rpc_calls_total{service="debvisor.v1.NodeService",method="ListNodes",code="OK"} 20010
debvisor_rpc_calls_total{service="debvisor.v1.NodeService",method="ListNodes",code="PERMISSION_DENIED"} 3
debvisor_rpc_calls_total{method="ListNodes",code="UNAUTHENTICATED",service="debvisor.v1.NodeService"} 2
debvisor_rpc_calls_total{service="debvisor.v1.NodeService",method="Heartbeat",code="OK"} 7
debvisor_rpc_calls_total{service="debvisor.v1.VmService",method="ListNodes",code="OK"} 5
debvisor_audit_records 40020
debvisor_audit_fsyncs 1234
`;

describe("server counters", () => {
  it("counts one method's OK calls and every other outcome, whatever the label order", () => {
    assert.deepEqual(callCounts(METRICS, "debvisor.v1.NodeService", "ListNodes"), {
      ok: 20010,
      other: 5,
    });
    assert.deepEqual(callCounts(METRICS, "debvisor.v1.NodeService", "GetNode"), {
      ok: 0,
      other: 0,
    });
  });

  it("reads an unlabelled gauge", () => {
    assert.equal(metricValue(METRICS, "debvisor_audit_records"), 40020);
    assert.equal(metricValue(METRICS, "debvisor_audit"), undefined);
  });
});

describe("whether a run counts", () => {
  const before = { ok: 10, other: 1 };
  it("counts when client and server agree that every call sent succeeded", () => {
    assert.deepEqual(
      runProblems({ sent: 100, clientOk: 100, before, after: { ok: 110, other: 1 } }),
      [],
    );
  });

  it("rejects HTTP successes the server counted as denied", () => {
    assert.deepEqual(
      runProblems({ sent: 100, clientOk: 100, before, after: { ok: 10, other: 101 } }),
      ["server counted 0 OK calls, 100 were sent", "server counted 100 calls that did not end OK"],
    );
  });

  it("rejects client failures, server counts that do not match, and sample problems", () => {
    assert.deepEqual(
      runProblems({
        sent: 100,
        clientOk: 98,
        before,
        after: { ok: 112, other: 1 },
        sampleProblems: ["sample: call 0: grpc-status 7"],
      }),
      [
        "sample: call 0: grpc-status 7",
        "2 of 100 calls failed at the client",
        "server counted 102 OK calls, 100 were sent",
      ],
    );
  });
});
