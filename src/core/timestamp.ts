import { create } from "@bufbuild/protobuf";
import { type Timestamp, TimestampSchema } from "../gen/debvisor/v1/common_pb.js";

/** Epoch milliseconds as a debvisor.v1.Timestamp. */
export function timestampFromMs(ms: number): Timestamp {
  const seconds = Math.floor(ms / 1000);
  return create(TimestampSchema, {
    seconds: BigInt(seconds),
    nanos: (ms - seconds * 1000) * 1_000_000,
  });
}

/** A debvisor.v1.Timestamp (or any seconds and nanos) as epoch milliseconds (0 when unset). */
export function msFromTimestamp(ts: { seconds: bigint; nanos: number } | undefined): number {
  if (ts === undefined) return 0;
  return Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1_000_000);
}
