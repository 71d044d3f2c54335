import { Readable } from "node:stream";
import { RpcError, throwIfAborted } from "../core/index.js";

/** The snapshot a simulated send stream carries. */
export interface StreamedSnapshot {
  readonly name: string;
  readonly createdMs: number;
  readonly usedBytes: number;
}

/** The first line of a simulated send stream: what it carries and how many bytes follow. */
export interface SimulatedStreamHeader {
  readonly v: 1;
  /** `zfs:tank/vm-1`: a stream for another dataset is refused. */
  readonly dataset: string;
  readonly base: string | null;
  readonly snapshot: StreamedSnapshot;
  readonly sizeBytes: number;
  /** Bytes after the header line, as many as a real stream of the snapshot would move. */
  readonly payload: number;
}

const CHUNK = 64 * 1024;
const MAX_HEADER = 64 * 1024;

/**
 * The bytes of a simulated `zfs send`: a JSON header line, then `payload`
 * filler bytes, produced as they are read (never all in memory).
 */
export function simulatedSendStream(header: SimulatedStreamHeader, signal: AbortSignal): Readable {
  async function* bytes(): AsyncGenerator<Buffer> {
    yield Buffer.from(`${JSON.stringify(header)}\n`);
    const filler = Buffer.alloc(CHUNK, 0x5a);
    for (let left = header.payload; left > 0; left -= CHUNK) {
      throwIfAborted(signal);
      yield left >= CHUNK ? filler : filler.subarray(0, left);
    }
  }
  return Readable.from(bytes(), { objectMode: false });
}

/**
 * Reads a whole simulated send stream: its header, then exactly the payload
 * it announces. A short, long or garbled stream is STORAGE_UNAVAILABLE (a
 * broken transfer), so a receiver applies nothing it did not fully get.
 */
export async function readSimulatedSendStream(
  stream: Readable,
  signal: AbortSignal,
): Promise<{ header: SimulatedStreamHeader; bytes: number }> {
  const broken = (why: string) =>
    new RpcError("STORAGE_UNAVAILABLE", {
      message: "send stream interrupted or damaged",
      cause: new Error(why),
    });
  let head = Buffer.alloc(0);
  let header: SimulatedStreamHeader | undefined;
  let payload = 0;
  let total = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    throwIfAborted(signal);
    total += chunk.length;
    if (header !== undefined) {
      payload += chunk.length;
      continue;
    }
    head = Buffer.concat([head, chunk]);
    const nl = head.indexOf(0x0a);
    if (nl < 0) {
      if (head.length > MAX_HEADER) throw broken("no header line");
      continue;
    }
    try {
      header = JSON.parse(head.subarray(0, nl).toString("utf8")) as SimulatedStreamHeader;
    } catch {
      throw broken("header is not JSON");
    }
    if (header?.v !== 1 || typeof header.payload !== "number") throw broken("unknown header");
    payload = head.length - nl - 1;
  }
  if (header === undefined) throw broken("empty stream");
  if (payload !== header.payload)
    throw broken(`payload of ${payload} bytes, announced ${header.payload}`);
  return { header, bytes: total };
}
