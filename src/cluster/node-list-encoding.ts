// The protobuf encoding of a NodeList from per-node parts, so ListNodes does
// not encode every node's info and health again on every call. A summary is
// encoded in two parts: the fields that change only with the node's record
// (kept between calls) and the few that depend on the time of the call
// (encoded on each). Encodings of disjoint fields, concatenated, are one
// valid message: field order on the wire is free.

import { toBinary } from "@bufbuild/protobuf";
import { attachEncoding } from "../core/index.js";
import { TimestampSchema } from "../gen/debvisor/v1/common_pb.js";
import { NodeListSchema, type NodeSummary, NodeSummarySchema } from "../gen/debvisor/v1/node_pb.js";

/** A NodeSummary's encoding: the bytes of `record`, then those of `live`, are the whole message. */
export interface SummaryEncoding {
  /** Every field but the live ones; the same for every summary of one record revision. */
  readonly record: Uint8Array;
  /** Readiness, last heartbeat, heartbeat age and not-ready time (bytes). */
  readonly live: readonly number[];
}

/** The fields that depend on the time of the call (or are built anew on each). */
const LIVE: ReadonlySet<string> = new Set([
  "readiness",
  "lastHeartbeat",
  "heartbeatAgeMs",
  "notReadyForMs",
]);
/** Every other field, whatever is added to NodeSummary later: none is ever left out. */
const RECORD_FIELDS = NodeSummarySchema.fields
  .map((f) => f.localName)
  .filter((name) => !LIVE.has(name));

const VARINT = 0;
const LENGTH_DELIMITED = 2;
const tag = (fieldNo: number, wireType: number) => (fieldNo << 3) | wireType;
const F = NodeSummarySchema.field;
const READINESS = tag(F.readiness.number, VARINT);
const LAST_HEARTBEAT = tag(F.lastHeartbeat.number, LENGTH_DELIMITED);
const HEARTBEAT_AGE = tag(F.heartbeatAgeMs.number, VARINT);
const NOT_READY_FOR = tag(F.notReadyForMs.number, VARINT);
const SECONDS = tag(TimestampSchema.field.seconds.number, VARINT);
const NANOS = tag(TimestampSchema.field.nanos.number, VARINT);
const NODES = tag(NodeListSchema.field.nodes.number, LENGTH_DELIMITED);
const NEXT_PAGE_TOKEN = tag(NodeListSchema.field.nextPageToken.number, LENGTH_DELIMITED);
const utf8 = new TextEncoder();

/** Encodes every field of `summary` but the live ones (its unknown fields too). */
export function encodeRecordFields(summary: NodeSummary): Uint8Array {
  return toBinary(NodeSummarySchema, {
    ...summary,
    readiness: 0,
    lastHeartbeat: undefined,
    heartbeatAgeMs: 0n,
    notReadyForMs: 0n,
  });
}

/** Encodes the live fields of `summary`, zero values left out as proto3 does. */
export function encodeLiveFields(summary: NodeSummary): number[] {
  const out: number[] = [];
  if (summary.readiness !== 0) pushVarint(pushVarint(out, READINESS), summary.readiness);
  const at = summary.lastHeartbeat;
  if (at !== undefined) {
    if (at.$unknown !== undefined && at.$unknown.length > 0) {
      const inner = toBinary(TimestampSchema, at);
      pushVarint(pushVarint(out, LAST_HEARTBEAT), inner.byteLength).push(...inner);
    } else {
      const inner: number[] = [];
      if (at.seconds !== 0n) pushVarint(pushVarint(inner, SECONDS), at.seconds);
      if (at.nanos !== 0) pushVarint(pushVarint(inner, NANOS), at.nanos);
      pushVarint(pushVarint(out, LAST_HEARTBEAT), inner.length).push(...inner);
    }
  }
  if (summary.heartbeatAgeMs !== 0n)
    pushVarint(pushVarint(out, HEARTBEAT_AGE), summary.heartbeatAgeMs);
  if (summary.notReadyForMs !== 0n)
    pushVarint(pushVarint(out, NOT_READY_FOR), summary.notReadyForMs);
  return out;
}

/**
 * Appends `value` as a protobuf varint: as uint64, with negative values in
 * 64-bit two's complement (ten bytes), which is how int32, int64 and enum
 * fields are encoded. Returns `out`.
 */
export function pushVarint(out: number[], value: number | bigint): number[] {
  // Most values (ages, seconds, lengths) fit 32 bits: plain numbers, no BigInt arithmetic.
  const small =
    typeof value === "bigint" ? (value >= 0n && value <= 0xffffffffn ? Number(value) : -1) : value;
  if (small >= 0 && small <= 0xffffffff) {
    let v = small;
    while (v > 0x7f) {
      out.push((v & 0x7f) | 0x80);
      v = Math.floor(v / 128);
    }
    out.push(v);
    return out;
  }
  let v = BigInt.asUintN(64, BigInt(value));
  while (v > 0x7fn) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return out;
}

/** A NodeList's encoding from its summaries' encodings, in order, and its next page token. */
export function encodeNodeList(
  nodes: readonly SummaryEncoding[],
  nextPageToken: string,
): Uint8Array {
  const token = nextPageToken === "" ? undefined : utf8.encode(nextPageToken);
  // Tags and lengths first (small), then one buffer of the exact size.
  const heads: number[][] = [];
  let size = 0;
  for (const n of nodes) {
    const head = pushVarint([NODES], n.record.byteLength + n.live.length);
    heads.push(head);
    size += head.length + n.record.byteLength + n.live.length;
  }
  const tokenHead = token === undefined ? [] : pushVarint([NEXT_PAGE_TOKEN], token.byteLength);
  size += tokenHead.length + (token?.byteLength ?? 0);
  const out = new Uint8Array(size);
  let at = 0;
  nodes.forEach((n, i) => {
    const head = heads[i] as number[];
    out.set(head, at);
    at += head.length;
    out.set(n.record, at);
    at += n.record.byteLength;
    out.set(n.live, at);
    at += n.live.length;
  });
  out.set(tokenHead, at);
  if (token !== undefined) out.set(token, at + tokenHead.length);
  return out;
}

/** Encodes summaries, keeping each node's record part between calls. */
export interface SummaryEncoder {
  /**
   * The encoding of `summary`. Its record part is reused when every record
   * field (all but the live ones) is identical (===) to those of the summary
   * it was encoded from: the same info and health objects, the same counts;
   * a summary of a newer record revision has new ones.
   */
  encode(summary: NodeSummary): SummaryEncoding;
  /**
   * Given every node's current summary, drops what was kept for nodes that
   * are gone or whose record changed: at most one entry per current node.
   */
  retain(current: readonly NodeSummary[]): void;
}

/** Creates an empty {@link SummaryEncoder}. */
export function createSummaryEncoder(): SummaryEncoder {
  const kept = new Map<string, { readonly summary: NodeSummary; readonly bytes: Uint8Array }>();
  return {
    encode(summary) {
      const id = idOf(summary);
      const found = kept.get(id);
      let record: Uint8Array;
      if (found !== undefined && sameRecord(found.summary, summary)) {
        record = found.bytes;
      } else {
        record = encodeRecordFields(summary);
        kept.set(id, { summary, bytes: record });
      }
      return { record, live: encodeLiveFields(summary) };
    },
    retain(current) {
      let valid = 0;
      for (const summary of current) {
        const found = kept.get(idOf(summary));
        if (found === undefined) continue;
        if (sameRecord(found.summary, summary)) valid++;
        else kept.delete(idOf(summary));
      }
      if (kept.size > valid) {
        const ids = new Set(current.map(idOf));
        for (const id of kept.keys()) if (!ids.has(id)) kept.delete(id);
      }
    },
  };
}

function idOf(summary: NodeSummary): string {
  return summary.info?.id?.id ?? "";
}

function sameRecord(a: NodeSummary, b: NodeSummary): boolean {
  if (a.$unknown !== b.$unknown) return false;
  const x = a as unknown as Record<string, unknown>;
  const y = b as unknown as Record<string, unknown>;
  for (const name of RECORD_FIELDS) if (x[name] !== y[name]) return false;
  return true;
}

/**
 * Attaches to `list` its encoding (core `attachEncoding`) built from its
 * summaries' encodings, and returns `list`. The caller must not change it.
 */
export function attachNodeListEncoding<
  L extends { readonly nodes: readonly NodeSummary[]; readonly nextPageToken: string },
>(list: L, encoder: SummaryEncoder): L {
  const parts = list.nodes.map((n) => encoder.encode(n));
  return attachEncoding(list, NodeListSchema, encodeNodeList(parts, list.nextPageToken));
}
