import { fromJsonString, toJsonString } from "@bufbuild/protobuf";
import { RpcError } from "../core/index.js";
import { type VmInfo, VmInfoSchema } from "../gen/debvisor/v1/vm_pb.js";
import { FREE, type LockRow, openDiskLockStore } from "./simulated-disk-lock-store.js";
import { createDiskLockTake } from "./simulated-disk-lock-take.js";
import { datasetKey } from "./storage-driver.js";

/** Who holds a disk's lock, under which fencing token. */
export interface DiskLock {
  readonly disk: string;
  readonly owner: string;
  readonly generation: bigint;
}

/** A node fenced from a disk: its lock was taken by `by` under `generation`. */
export interface DiskBlock {
  readonly disk: string;
  readonly node: string;
  readonly by: string;
  readonly generation: bigint;
  readonly atMs: number;
}

/**
 * The simulation's shared storage, as every node of a simulated cluster
 * sees it: one directory (`shared-storage/`) used by several agent
 * processes on this host. It holds what a Ceph cluster holds for its RBD
 * images: the VMs' definitions (so any node can define a VM of a failed
 * one) and one exclusive lock per disk whose record names the owner node
 * and the fencing token (the VM's placement generation) it was taken
 * under. Taking a lock under a higher generation blocklists the previous
 * owner for that disk, as `ceph osd blocklist add` does for its client.
 *
 * Atomic across processes: every change is one SQLite `BEGIN IMMEDIATE`
 * transaction on `disk-locks.sqlite` (WAL, busy timeout), so two nodes
 * racing for a disk are serialized by the database's file lock.
 */
export interface SimulatedDiskLocks {
  /**
   * Takes the locks of `disks` for `node` under `generation` and, in the
   * same transaction, runs `commit` (the caller records the domain's
   * start there): either both happen or neither. Refused, changing
   * nothing, with STALE_GENERATION when a disk's lock was taken under a
   * generation at least as high by another node (or higher by any), and
   * with FENCED when generation is 0 (an unfenced start) and another node
   * holds a lock, or the lock was freed under a generation. A higher generation takes the lock and blocklists the
   * previous owner for that disk.
   */
  acquire(disks: readonly string[], node: string, generation: bigint, commit: () => void): void;
  /**
   * A migration's switchover: moves the locks of `disks` from `from` to
   * `to` in the same transaction as `commit` (the source hands the domain
   * over there). Refused, changing nothing, with FENCED when `from` no
   * longer holds a lock (another node took it: the VM was placed elsewhere
   * meanwhile) and STALE_GENERATION when `generation` (the migration's, 0:
   * none) is older than the lock's. Nobody is blocklisted: the owner gives
   * the disks away.
   */
  handOver(
    disks: readonly string[],
    from: string,
    to: string,
    generation: bigint,
    commit: () => void,
  ): void;
  /**
   * Gives up `node`'s locks of `disks` (its copy was undefined: it writes
   * nothing any more). The lock stays free, not gone: it keeps the highest
   * of its generation and `generation` (the one the removal was decided
   * under), so a late start under an older generation is still refused,
   * and another node's start under the current one takes it without
   * blocklisting anyone. Locks another node holds are not touched.
   */
  release(disks: readonly string[], node: string, generation: bigint): void;
  /** The disks among `disks` whose lock another node holds: `node` is fenced from them. */
  lost(disks: readonly string[], node: string): string[];
  lock(disk: string): DiskLock | undefined;
  /** Nodes fenced from disks, newest first. */
  blocklist(): DiskBlock[];
  /** Records a VM's definition (and, if absent, its disks' locks for `node` under generation 0). */
  define(vm: VmInfo, node: string): void;
  /** A VM's definition as last recorded, from any node. */
  definition(vmId: string): VmInfo | undefined;
  close(): void;
}

/** The lock names of a VM: one per disk, or the VM itself when it has none. */
export function lockNamesOf(vm: VmInfo): string[] {
  return vm.disks.length > 0 ? vm.disks.map((d) => datasetKey(d)) : [`vm/${vm.id}`];
}

/** Opens (creating if needed) the shared storage in `dir`. */
export function openSimulatedDiskLocks(dir: string): SimulatedDiskLocks {
  const store = openDiskLockStore(dir);
  const { db, getLock, putLock, seedLock, unblock, blocks, putDefinition, getDefinition, fenced } =
    store;
  const take = createDiskLockTake(store);

  return {
    acquire(disks, node, generation, commit) {
      db.transaction(() => {
        take(disks, node, generation);
        commit();
      }).immediate();
    },
    handOver(disks, from, to, generation, commit) {
      db.transaction(() => {
        const now = Date.now();
        for (const disk of disks) {
          const row = getLock.get(disk) as LockRow | undefined;
          if (row !== undefined && fenced(disk, from, row))
            throw new RpcError("FENCED", {
              cause: new Error(`${disk}: locked by ${row.owner || "nobody"}, not ${from}`),
            });
          if (row !== undefined && generation > 0n && generation < row.generation)
            throw new RpcError("STALE_GENERATION", {
              cause: new Error(`${disk}: generation ${generation} is older than ${row.generation}`),
            });
          const keep =
            row !== undefined && row.generation > generation ? row.generation : generation;
          unblock.run(disk, to);
          putLock.run(disk, to, keep, now);
        }
        commit();
      }).immediate();
    },
    release(disks, node, generation) {
      db.transaction(() => {
        const now = Date.now();
        for (const disk of disks) {
          const row = getLock.get(disk) as LockRow | undefined;
          if (row === undefined || row.owner !== node) continue;
          // biome-ignore lint/complexity/useMathMinMax: bigints, which Math.max does not take
          putLock.run(disk, FREE, row.generation > generation ? row.generation : generation, now);
        }
      }).immediate();
    },
    lost(disks, node) {
      return disks.filter((disk) => {
        const row = getLock.get(disk) as LockRow | undefined;
        return row !== undefined && fenced(disk, node, row);
      });
    },
    lock(disk) {
      const row = getLock.get(disk) as LockRow | undefined;
      return row === undefined ? undefined : { ...row };
    },
    blocklist() {
      return (
        blocks.all() as {
          disk: string;
          node: string;
          byNode: string;
          generation: bigint;
          atMs: bigint;
        }[]
      ).map((r) => ({
        disk: r.disk,
        node: r.node,
        by: r.byNode,
        generation: r.generation,
        atMs: Number(r.atMs),
      }));
    },
    define(vm, node) {
      db.transaction(() => {
        putDefinition.run(vm.id, toJsonString(VmInfoSchema, vm));
        const now = Date.now();
        for (const disk of lockNamesOf(vm)) seedLock.run(disk, node, now);
      }).immediate();
    },
    definition(vmId) {
      const row = getDefinition.get(vmId) as { info: string } | undefined;
      return row === undefined ? undefined : fromJsonString(VmInfoSchema, row.info);
    },
    close: () => db.close(),
  };
}
