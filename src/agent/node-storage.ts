import { join } from "node:path";
import { systemClock } from "../core/index.js";
import {
  canStream,
  createRbdDriver,
  createSimulatedStorage,
  createZfsDriver,
  datasetKey,
  type SnapshotDriver,
  type StreamReplicationDriver,
} from "../drivers/index.js";
import { type DatasetRef, StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import type { AgentConfig } from "./agent-config.js";
import type { NodeHypervisor } from "./node-hypervisor.js";

/** This node's storage as the agent drives it. */
export interface NodeStorage {
  /** `sim`, `zfs` or `rbd`: named in the Hello as capability `storage:<kind>`. */
  readonly kind: string;
  /** The driver, acting on this node's copies only. */
  readonly driver: SnapshotDriver;
  /** The driver's send and receive halves, when it replicates (sim, zfs). */
  readonly stream: StreamReplicationDriver | undefined;
  /** Datasets the node holds, for the Hello. */
  datasets(): DatasetRef[];
}

/**
 * Opens the configured storage, or undefined for `none`. The simulation
 * starts with one dataset per disk of the node's domains
 * (`storage.simDatasetBytes` each, no snapshots) and keeps its state in
 * `dir`/sim-storage.json from then on. ZFS and RBD act on this host.
 */
export function openNodeStorage(
  config: AgentConfig,
  nodeId: string,
  disks: readonly DatasetRef[],
): NodeStorage | undefined {
  const { storage } = config;
  const backend = { zfs: StorageBackend.BACKEND_ZFS, rbd: StorageBackend.BACKEND_RBD };
  const mine = (b: StorageBackend) => () => {
    const seen = new Map(disks.filter((d) => d.backend === b).map((d) => [datasetKey(d), d]));
    return [...seen.values()];
  };
  switch (storage.kind) {
    case "none":
      return undefined;
    case "sim": {
      const sim = createSimulatedStorage({
        datasets: disks.map((dataset) => ({
          dataset,
          nodeId,
          sizeBytes: storage.simDatasetBytes,
        })),
        clock: systemClock,
        stateFile: join(config.dir, "sim-storage.json"),
      });
      return { kind: "sim", driver: sim, stream: sim, datasets: () => sim.datasetsOn(nodeId) };
    }
    case "zfs": {
      const zfs = createZfsDriver({ command: storage.zfsCommand, localNode: nodeId });
      return {
        kind: "zfs",
        driver: zfs,
        stream: canStream(zfs) ? zfs : undefined,
        datasets: mine(backend.zfs),
      };
    }
    case "rbd":
      return {
        kind: "rbd",
        driver: createRbdDriver({ command: storage.rbdCommand }),
        stream: undefined,
        datasets: mine(backend.rbd),
      };
  }
}

/** What `debvisor-agent status` shows of the node's storage. */
export interface NodeStorageStatus {
  readonly kind: string;
  readonly datasets: { readonly dataset: string; readonly snapshots: string[] }[];
}

/** The node's datasets and their snapshots as its storage reports them; undefined for `none`. */
export async function storageStatus(
  config: AgentConfig,
  nodeId: string,
  hv: NodeHypervisor,
): Promise<NodeStorageStatus | undefined> {
  const signal = AbortSignal.timeout(30_000);
  const storage = openNodeStorage(config, nodeId, (await hv.inventory(signal)).datasets);
  if (storage === undefined) return undefined;
  const datasets = [];
  for (const d of storage.datasets()) {
    const snaps = await storage.driver.listSnapshots(d, signal, nodeId);
    datasets.push({
      dataset: datasetKey(d),
      snapshots: (snaps ?? []).map((s) => s.ref?.snapshotName ?? ""),
    });
  }
  return { kind: storage.kind, datasets };
}
