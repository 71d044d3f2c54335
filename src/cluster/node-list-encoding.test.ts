import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, equals, fromBinary } from "@bufbuild/protobuf";
import fc from "fast-check";
import { HealthSchema, NodeListSchema, NodeSummarySchema } from "../gen/debvisor/v1/node_pb.js";
import {
  createSummaryEncoder,
  encodeLiveFields,
  encodeNodeList,
  encodeRecordFields,
} from "./node-list-encoding.js";

const INT64 = fc.bigInt(-(1n << 63n), (1n << 63n) - 1n);
const UINT64 = fc.bigInt(0n, (1n << 64n) - 1n);
const INT32 = fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 });

/** Summaries with every live field anywhere in its range, and some record fields. */
const summary = fc
  .record({
    id: fc.stringMatching(/^[a-z][a-z0-9]{0,5}$/),
    readiness: fc.oneof(fc.constantFrom(0, 1, 2), INT32),
    lastHeartbeat: fc.option(fc.record({ seconds: INT64, nanos: INT32 }), { nil: undefined }),
    heartbeatAgeMs: fc.oneof(fc.constant(0n), fc.bigInt(0n, 1n << 32n), UINT64),
    notReadyForMs: fc.oneof(fc.constant(0n), UINT64),
    cordoned: fc.boolean(),
    vmCount: fc.nat(),
    memoryAllocatedBytes: UINT64,
  })
  .map(({ id, ...fields }) => create(NodeSummarySchema, { info: { id: { id } }, ...fields }));

describe("node list encoding", () => {
  it("encodes a summary's record and live fields so that together they decode to it", () => {
    fc.assert(
      fc.property(summary, (s) => {
        const live = encodeLiveFields(s);
        const bytes = new Uint8Array([...encodeRecordFields(s), ...live]);
        assert.ok(equals(NodeSummarySchema, fromBinary(NodeSummarySchema, bytes), s));
      }),
      { numRuns: 500 },
    );
  });

  it("encodes a list that decodes to its summaries, in order, and its page token", () => {
    fc.assert(
      fc.property(fc.array(summary, { maxLength: 5 }), fc.string(), (nodes, nextPageToken) => {
        const encoder = createSummaryEncoder();
        const bytes = encodeNodeList(
          nodes.map((n) => encoder.encode(n)),
          nextPageToken,
        );
        const want = create(NodeListSchema, { nodes, nextPageToken });
        assert.ok(equals(NodeListSchema, fromBinary(NodeListSchema, bytes), want));
      }),
    );
  });

  it("encodes a node anew once one of its record fields is another object or value", () => {
    const encoder = createSummaryEncoder();
    const first = create(NodeSummarySchema, { info: { id: { id: "n1" } }, health: { cpuLoad: 1 } });
    encoder.encode(first);
    const healthier = { ...first, health: create(HealthSchema, { cpuLoad: 2 }) };
    const cordoned = { ...first, cordoned: true };
    for (const next of [healthier, cordoned]) {
      const { record, live } = encoder.encode(next);
      const decoded = fromBinary(NodeSummarySchema, new Uint8Array([...record, ...live]));
      assert.ok(equals(NodeSummarySchema, decoded, next));
    }
  });
});
