import { GENERATION_FLOOR_KEY } from "../cluster/index.js";
import {
  type KvStore,
  MAX_KEY_LENGTH,
  MAX_TXN_OPS,
  MAX_VALUE_BYTES,
  rangeAll,
} from "../store/index.js";

/** First line of an export: what it is and where it came from. */
interface ExportHeader {
  readonly format: "debvisor-store-export";
  readonly version: 1;
  readonly backend: string;
  readonly revision: number;
}

/** A problem with an import; the message names the line. */
export class TransferError extends Error {
  override readonly name = "TransferError";
}

/** Longest line an import accepts: a maximal key and value, base64-encoded, with room for JSON. */
const MAX_LINE = MAX_KEY_LENGTH + Math.ceil((MAX_VALUE_BYTES * 4) / 3) + 1024;

/**
 * Writes every key as JSON lines (`{"key": ..., "value": base64}`) after a
 * header line. Keys attached to leases are ephemeral (they vanish when their
 * owner stops renewing) and are left out.
 */
export async function exportStore(
  store: KvStore,
  write: (line: string) => void | Promise<void>,
  signal?: AbortSignal,
): Promise<{ records: number; leased: number }> {
  const header: ExportHeader = {
    format: "debvisor-store-export",
    version: 1,
    backend: store.backend,
    revision: await store.revision({ signal }),
  };
  await write(`${JSON.stringify(header)}\n`);
  let records = 0;
  let leased = 0;
  for await (const kv of rangeAll(store, "", { signal })) {
    if (kv.lease !== undefined) {
      leased++;
      continue;
    }
    await write(
      `${JSON.stringify({ key: kv.key, value: Buffer.from(kv.value).toString("base64") })}\n`,
    );
    records++;
  }
  return { records, leased };
}

/**
 * Reads an export into an empty store, in transactions of up to 100 keys.
 * Refuses a store that already holds keys unless `overwrite`; refuses a
 * malformed line, naming it, before writing anything after it. Then writes
 * the generation floor (the source's revision plus the floor it had): VMs
 * created here take generations above it plus this store's revision.
 */
export async function importStore(
  store: KvStore,
  lines: AsyncIterable<string>,
  options: { overwrite?: boolean; signal?: AbortSignal } = {},
): Promise<{ records: number }> {
  // Take the iterator before the first await: a readline interface emits lines
  // as soon as it reads them, and drops those nobody is iterating yet.
  const iterator = lines[Symbol.asyncIterator]();
  if (
    !options.overwrite &&
    (await store.range("", { limit: 1, signal: options.signal })).kvs.length > 0
  ) {
    throw new TransferError(
      "the target store is not empty (use --overwrite to write over existing keys)",
    );
  }
  let lineNo = 0;
  let records = 0;
  // VM generations went up to the source's revision plus its own imports' (its floor); this
  // store's revisions start again, so they are added to its floor (see generationFloor).
  let revision = 0;
  let floor = 0;
  let batch: { key: string; value: Uint8Array }[] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    await store.txn(
      { compares: [], success: batch.map((r) => ({ type: "put" as const, ...r })) },
      { signal: options.signal },
    );
    records += batch.length;
    batch = [];
  };
  for (let next = await iterator.next(); next.done !== true; next = await iterator.next()) {
    const line = next.value;
    lineNo++;
    if (line.length > MAX_LINE)
      throw new TransferError(`line ${lineNo}: longer than any record can be`);
    if (lineNo === 1) {
      const header = parse(line, lineNo) as Partial<ExportHeader>;
      if (header.format !== "debvisor-store-export" || header.version !== 1) {
        throw new TransferError("line 1: not a debvisor store export (version 1)");
      }
      if (Number.isSafeInteger(header.revision)) revision = header.revision ?? 0;
      continue;
    }
    if (line.trim() === "") continue;
    const rec = parse(line, lineNo) as { key?: unknown; value?: unknown };
    if (
      typeof rec.key !== "string" ||
      typeof rec.value !== "string" ||
      !/^[A-Za-z0-9+/]*={0,2}$/.test(rec.value)
    ) {
      throw new TransferError(`line ${lineNo}: expected {"key": string, "value": base64}`);
    }
    const value = new Uint8Array(Buffer.from(rec.value, "base64"));
    if (rec.key === GENERATION_FLOOR_KEY) {
      const imported = Number(new TextDecoder().decode(value));
      if (Number.isSafeInteger(imported)) floor = imported;
      continue;
    }
    batch.push({ key: rec.key, value });
    if (batch.length >= Math.min(100, MAX_TXN_OPS)) await flush();
  }
  if (lineNo === 0) throw new TransferError("empty input");
  await flush();
  // Written over (--overwrite), a store keeps a floor of its own if that is higher.
  const own = await store.get(GENERATION_FLOOR_KEY, { signal: options.signal });
  const kept = own === undefined ? 0 : Number(new TextDecoder().decode(own.value));
  const next = Math.max(floor + revision, Number.isSafeInteger(kept) ? kept : 0);
  if (next > 0)
    await store.put(GENERATION_FLOOR_KEY, new TextEncoder().encode(`${next}`), {
      signal: options.signal,
    });
  return { records };
}

function parse(line: string, lineNo: number): unknown {
  try {
    return JSON.parse(line);
  } catch {
    throw new TransferError(`line ${lineNo}: not JSON`);
  }
}
