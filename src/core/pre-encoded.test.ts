import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { NodeListSchema, NodeSummarySchema } from "../gen/debvisor/v1/node_pb.js";
import { attachEncoding, preEncoded } from "./pre-encoded.js";

describe("attachEncoding", () => {
  const bytes = new Uint8Array([0x12, 0x01, 0x74]);

  it("hands the bytes to whoever asks for the same object as the same message type", () => {
    const list = attachEncoding({ nodes: [], nextPageToken: "t" }, NodeListSchema, bytes);
    assert.equal(preEncoded(list, NodeListSchema), bytes);
  });

  it("gives nothing for a copy, so a stage that changes the answer never sends stale bytes", () => {
    const list = attachEncoding({ nodes: [], nextPageToken: "t" }, NodeListSchema, bytes);
    assert.equal(preEncoded({ ...list, nextPageToken: "" }, NodeListSchema), undefined);
  });

  it("gives nothing when asked for another message type", () => {
    const list = attachEncoding({ nodes: [], nextPageToken: "t" }, NodeListSchema, bytes);
    assert.equal(preEncoded(list, NodeSummarySchema), undefined);
  });

  it("gives nothing for values nothing can be attached to", () => {
    for (const v of [undefined, null, 0, "t", true])
      assert.equal(preEncoded(v, NodeListSchema), undefined);
  });
});
