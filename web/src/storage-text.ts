// How the storage pages write and read their values: datasets as hvctl
// writes them, replication states, times, durations, and the API's refusal
// shown in place.

import {
  type DatasetRef,
  ReplicationState,
  StorageBackend,
} from "../../src/gen/debvisor/v1/storage_pb.js";
import { describe } from "./api.js";
import { el } from "./dom.js";

/** A dataset as hvctl writes it: zfs:POOL/NAME or rbd:POOL/IMAGE. */
export const datasetText = (d: DatasetRef | undefined) =>
  d === undefined
    ? ""
    : `${d.backend === StorageBackend.BACKEND_RBD ? "rbd" : "zfs"}:${d.pool}/${d.name}`;

/** A dataset from hvctl's spelling (zfs:POOL/NAME or rbd:POOL/IMAGE); undefined when it is not one. */
export function parseDataset(text: string): DatasetRef | undefined {
  const m = /^(zfs|rbd):([^/]+)\/(.+)$/.exec(text);
  if (m === null) return undefined;
  return {
    $typeName: "debvisor.v1.DatasetRef",
    backend: m[1] === "rbd" ? StorageBackend.BACKEND_RBD : StorageBackend.BACKEND_ZFS,
    pool: m[2] ?? "",
    name: m[3] ?? "",
  };
}

/** The API's refusal (or failure) as an alert paragraph, shown where the content would be. */
export const refusal = (err: unknown) => el("p", { role: "alert", class: "error" }, describe(err));
/** A replication state in lower case without its prefix, like "idle". */
export const replState = (s: ReplicationState | undefined) =>
  ReplicationState[s ?? 0]?.replace("REPL_STATE_", "").toLowerCase() ?? "";
/** A protobuf timestamp in epoch milliseconds; undefined stays undefined. */
export const tsMs = (t: { seconds: bigint; nanos: number } | undefined) =>
  t === undefined ? undefined : Number(t.seconds) * 1000 + t.nanos / 1e6;
/** Epoch milliseconds as "YYYY-MM-DD HH:MM:SS" (UTC), or "never" for none or 0. */
export const when = (ms: number | undefined) =>
  ms === undefined || ms === 0
    ? "never"
    : new Date(ms).toISOString().slice(0, 19).replace("T", " ");
/** Seconds as "42 s", "12 min", "3.5 h". */
export function duration(s: number): string {
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
