// The protobuf encoding of a NodeList from per-node parts, so ListNodes does
// not encode every node's info and health again on every call. A summary is
// encoded in two parts: the fields that change only with the node's record
// (cached per record revision by the inventory) and the few fields computed
// at the time of the call. Encodings of disjoint fields, concatenated, are
// one valid message: field order on the wire is free.

import { create, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { attachEncoding } from "../core/index.js";
import { NodeListSchema, type NodeSummary, NodeSummarySchema } from "../gen/debvisor/v1/node_pb.js";

/** A NodeSummary's encoding: `record` + `live` together are the whole message. */
export interface SummaryEncoding {
  /** Every field except the live ones; the same for every summary of one record revision. */
  readonly record: Uint8Array;
  /** The fields that depend on the time of the call. */
  readonly live: Uint8Array;
}

const F = NodeSummarySchema.field;
const READINESS = F.readiness.number;
const HEARTBEAT_AGE = F.heartbeatAgeMs.number;
const NOT_READY_FOR = F.notReadyForMs.number;
const NODES = NodeListSchema.field.nodes.number;
const NEXT_PAGE_TOKEN = NodeListSchema.field.nextPageToken.number;

/**
 * Encodes every field of `summary` except readiness, heartbeat_age_ms and
 * not_ready_for_ms. A field added to NodeSummary later lands here, so it is
 * never left out; if it depends on the time, it belongs in
 * {@link encodeLiveFields} instead.
 */
export function encodeRecordFields(summary: NodeSummary): Uint8Array {
  return toBinary(
    NodeSummarySchema,
    create(NodeSummarySchema, {
      ...summary,
      readiness: 0,
      heartbeatAgeMs: 0n,
      notReadyForMs: 0n,
    }),
  );
}

/** Encodes readiness, heartbeat_age_ms and not_ready_for_ms (zero values omitted, as proto3 does). */
export function encodeLiveFields(summary: NodeSummary): Uint8Array {
  const w = new BinaryWriter();
  if (summary.readiness !== 0) w.tag(READINESS, WireType.Varint).int32(summary.readiness);
  if (summary.heartbeatAgeMs !== 0n)
    w.tag(HEARTBEAT_AGE, WireType.Varint).uint64(summary.heartbeatAgeMs);
  if (summary.notReadyForMs !== 0n)
    w.tag(NOT_READY_FOR, WireType.Varint).uint64(summary.notReadyForMs);
  return w.finish();
}

/** A NodeList's encoding from its summaries' encodings, in order, and its next page token. */
export function encodeNodeList(
  nodes: readonly SummaryEncoding[],
  nextPageToken: string,
): Uint8Array {
  const w = new BinaryWriter();
  for (const n of nodes) {
    w.tag(NODES, WireType.LengthDelimited)
      .uint32(n.record.byteLength + n.live.byteLength)
      .raw(n.record)
      .raw(n.live);
  }
  if (nextPageToken !== "") w.tag(NEXT_PAGE_TOKEN, WireType.LengthDelimited).string(nextPageToken);
  return w.finish();
}

/**
 * Attaches to `list` its encoding (core `attachEncoding`) when every summary
 * in it has one (`encodingOf`); otherwise leaves it alone, and a binary
 * transport encodes it as usual. Returns `list`.
 */
export function attachNodeListEncoding<
  L extends { readonly nodes: readonly NodeSummary[]; readonly nextPageToken: string },
>(list: L, encodingOf: (summary: NodeSummary) => SummaryEncoding | undefined): L {
  const parts: SummaryEncoding[] = [];
  for (const node of list.nodes) {
    const part = encodingOf(node);
    if (part === undefined) return list;
    parts.push(part);
  }
  return attachEncoding(list, NodeListSchema, encodeNodeList(parts, list.nextPageToken));
}
