import { create } from "@bufbuild/protobuf";
import { invalid } from "../core/index.js";
import { OperationKind } from "../gen/debvisor/v1/agent_pb.js";
import {
  type DatasetRef,
  DatasetRefSchema,
  StorageBackend,
} from "../gen/debvisor/v1/storage_pb.js";
import { backendName } from "./storage-names.js";

/** A storage operation's parameters, as an OperationDispatch carries them to an agent. */
export interface StorageParams {
  readonly dataset: DatasetRef;
  readonly snapshot?: string;
  readonly base?: string;
  /** Bytes per second; 0 is unlimited. */
  readonly bandwidth?: number;
}

/** Encodes {@link StorageParams} into dispatch params (`backend`, `pool`, `dataset`, ...). */
export function encodeStorageParams(p: StorageParams): Record<string, string> {
  const backend = p.dataset.backend === StorageBackend.BACKEND_RBD ? "rbd" : "zfs";
  return {
    backend,
    pool: p.dataset.pool,
    dataset: p.dataset.name,
    ...(p.snapshot === undefined ? {} : { snapshot: p.snapshot }),
    ...(p.base === undefined ? {} : { base: p.base }),
    ...(p.bandwidth === undefined || p.bandwidth <= 0 ? {} : { bandwidth: String(p.bandwidth) }),
  };
}

/** Decodes dispatch params; names are checked as every storage call checks them (INVALID_ARGUMENT). */
export function decodeStorageParams(params: Readonly<Record<string, string>>): StorageParams {
  const backend =
    params.backend === "zfs"
      ? StorageBackend.BACKEND_ZFS
      : params.backend === "rbd"
        ? StorageBackend.BACKEND_RBD
        : undefined;
  if (backend === undefined) throw invalid("backend: zfs or rbd");
  const dataset = create(DatasetRefSchema, {
    backend,
    pool: params.pool ?? "",
    name: params.dataset ?? "",
  });
  backendName(dataset);
  const bandwidth = params.bandwidth === undefined ? 0 : Number(params.bandwidth);
  if (!Number.isSafeInteger(bandwidth) || bandwidth < 0)
    throw invalid("bandwidth: bytes per second");
  return { dataset, snapshot: params.snapshot, base: params.base, bandwidth };
}

/** The storage operation kinds (OperationKind 20-29), run by an agent's storage. */
const STORAGE_KINDS: ReadonlySet<OperationKind> = new Set([
  OperationKind.LIST_SNAPSHOTS,
  OperationKind.CREATE_SNAPSHOT,
  OperationKind.DESTROY_SNAPSHOT,
  OperationKind.SEND_SNAPSHOT,
  OperationKind.RECEIVE_SNAPSHOT,
]);

/** Whether an operation acts on the node's storage. */
export function isStorageOperation(kind: OperationKind): boolean {
  return STORAGE_KINDS.has(kind);
}
