import { fromJson, type JsonValue, toJson } from "@bufbuild/protobuf";
import { type DatasetRef, DatasetRefSchema } from "../gen/debvisor/v1/storage_pb.js";
import { readFileIfPresent, writeFileDurably } from "./durable-file.js";

/** One simulated snapshot as kept in memory and on disk. */
export interface StoredSnap {
  readonly name: string;
  readonly createdMs: number;
  readonly usedBytes: number;
  holds: number;
  protected: boolean;
}

/** One copy of a dataset (a ZFS dataset on a node, or an RBD image). */
export interface StoredCopy {
  readonly dataset: DatasetRef;
  sizeBytes: number;
  snapshots: StoredSnap[];
  /** The RBD snapshot this image was cloned from. */
  parent?: { readonly key: string; readonly snapshot: string };
}

/** What the simulated storage keeps between runs. */
export interface StorageState {
  readonly copies: Map<string, StoredCopy>;
  readonly homes: Map<string, string>;
}

interface StateFile {
  version: 1;
  copies: {
    key: string;
    dataset: JsonValue;
    sizeBytes: number;
    snapshots: StoredSnap[];
    parent?: { key: string; snapshot: string };
  }[];
  homes: [string, string][];
}

/** The state as it would be written: compare texts to know whether anything changed. */
export function storageStateText(state: StorageState): string {
  const data: StateFile = {
    version: 1,
    copies: [...state.copies].map(([key, c]) => ({
      key,
      dataset: toJson(DatasetRefSchema, c.dataset),
      sizeBytes: c.sizeBytes,
      snapshots: c.snapshots,
      ...(c.parent === undefined ? {} : { parent: c.parent }),
    })),
    homes: [...state.homes],
  };
  return JSON.stringify(data);
}

/** Writes `text` durably: a temporary file, fsync, rename (as the simulated world is saved). */
export function writeStorageState(file: string, text: string): void {
  writeFileDurably(file, text);
}

/** Reads a state written by {@link writeStorageState}; undefined when there is no file. */
export function readStorageState(file: string): StorageState | undefined {
  const text = readFileIfPresent(file);
  if (text === undefined) return undefined;
  const data = JSON.parse(text) as StateFile;
  if (data.version !== 1) throw new Error(`simulated storage state ${file}: unknown version`);
  const copies = new Map<string, StoredCopy>();
  for (const c of data.copies)
    copies.set(c.key, {
      dataset: fromJson(DatasetRefSchema, c.dataset),
      sizeBytes: c.sizeBytes,
      snapshots: c.snapshots,
      ...(c.parent === undefined ? {} : { parent: c.parent }),
    });
  return { copies, homes: new Map(data.homes) };
}
