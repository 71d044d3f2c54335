import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fromJson, type JsonValue, toJson } from "@bufbuild/protobuf";
import {
  type OperationDispatch,
  OperationDispatchSchema,
  type OperationResult,
  OperationResultSchema,
} from "../gen/debvisor/v1/agent_pb.js";
import { writeFileDurably } from "./durable-file.js";

/** Finished operations remembered (oldest forgotten first); a redelivery older than that runs again. */
const KEEP_DONE = 2000;

/** What the agent knows of one operation. */
export interface JournalEntry {
  readonly dispatch: OperationDispatch;
  /** Set once the operation finished. Until then it was started and may have had its effect. */
  readonly result?: OperationResult;
}

/**
 * The agent's durable memory of operations, `operations.json` in its
 * directory: an operation is written as started before it acts, and as
 * done with its result before the result is sent. So after a crash the
 * agent knows which operations may have acted (started, not done) and
 * answers a redelivered finished one from here instead of running it again.
 * Every change is fsynced and renamed into place.
 */
export interface OperationJournal {
  get(operationId: string): JournalEntry | undefined;
  /** Started and not finished (after a restart: interrupted by the crash). */
  unfinished(): JournalEntry[];
  begin(dispatch: OperationDispatch): void;
  finish(result: OperationResult): void;
}

interface JournalFile {
  version: 1;
  entries: { dispatch: JsonValue; result?: JsonValue }[];
}

/** Opens (or starts) the journal in `dir`. */
export function openOperationJournal(dir: string): OperationJournal {
  const file = join(dir, "operations.json");
  const entries = new Map<string, JournalEntry>();
  let text: string | undefined;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  if (text !== undefined) {
    const data = JSON.parse(text) as JournalFile;
    if (data.version !== 1) throw new Error(`${file}: unknown journal version`);
    for (const e of data.entries) {
      const dispatch = fromJson(OperationDispatchSchema, e.dispatch);
      entries.set(dispatch.operationId, {
        dispatch,
        result: e.result === undefined ? undefined : fromJson(OperationResultSchema, e.result),
      });
    }
  }
  const save = () => {
    const done = [...entries.values()].filter((e) => e.result !== undefined);
    for (const e of done.slice(0, Math.max(0, done.length - KEEP_DONE)))
      entries.delete(e.dispatch.operationId);
    const data: JournalFile = {
      version: 1,
      entries: [...entries.values()].map((e) => ({
        dispatch: toJson(OperationDispatchSchema, e.dispatch),
        ...(e.result === undefined ? {} : { result: toJson(OperationResultSchema, e.result) }),
      })),
    };
    writeFileDurably(file, JSON.stringify(data));
  };
  return {
    get: (id) => entries.get(id),
    unfinished: () => [...entries.values()].filter((e) => e.result === undefined),
    begin(dispatch) {
      entries.set(dispatch.operationId, { dispatch });
      save();
    },
    finish(result) {
      const e = entries.get(result.operationId);
      if (e === undefined) throw new TypeError(`journal: ${result.operationId} was never begun`);
      // Re-insert so the map's order is the order operations finished in.
      entries.delete(result.operationId);
      entries.set(result.operationId, { dispatch: e.dispatch, result });
      save();
    },
  };
}

/**
 * A journal kept in memory, for a runner whose operations are durable
 * elsewhere (the control plane's local runner: the store holds each
 * operation's claim and result).
 */
export function createMemoryJournal(): OperationJournal {
  const entries = new Map<string, JournalEntry>();
  return {
    get: (id) => entries.get(id),
    unfinished: () => [...entries.values()].filter((e) => e.result === undefined),
    begin(dispatch) {
      entries.set(dispatch.operationId, { dispatch });
    },
    finish(result) {
      const e = entries.get(result.operationId);
      if (e === undefined) throw new TypeError(`journal: ${result.operationId} was never begun`);
      // Only the claim in the store keeps it from running twice; nothing to remember here.
      entries.delete(result.operationId);
    },
  };
}
