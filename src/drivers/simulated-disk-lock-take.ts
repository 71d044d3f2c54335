/**
 * The simulated disk locks' acquire rule: takes a VM's disks for a node
 * under a fencing token, refusing a stale or unfenced start and
 * blocklisting the previous owner, as Ceph's exclusive lock and
 * `ceph osd blocklist add` do. Runs inside the caller's transaction.
 */
import { RpcError } from "../core/index.js";
import { type DiskLockStore, FREE, type LockRow } from "./simulated-disk-lock-store.js";

/** Takes the locks of `disks` for `node` under `generation` (throws FENCED or STALE_GENERATION, changing nothing the transaction keeps). */
export type DiskLockTake = (disks: readonly string[], node: string, generation: bigint) => void;

/** Creates the {@link DiskLockTake} over the store's statements. */
export function createDiskLockTake(store: DiskLockStore): DiskLockTake {
  const { getLock, putLock, block, unblock, fenced } = store;
  return (disks: readonly string[], node: string, generation: bigint) => {
    const now = Date.now();
    for (const disk of disks) {
      const row = getLock.get(disk) as LockRow | undefined;
      if (row !== undefined && row.owner === FREE) {
        // Only a start under a generation lifts the node's blocklisting, or takes a lock
        // freed under one: an unfenced start (a copy the VM's record does not place here)
        // would otherwise take the disks the placement's start is about to.
        if (generation === 0n && (row.generation > 0n || fenced(disk, node, row)))
          throw new RpcError("FENCED", {
            cause: new Error(
              `${disk}: freed under generation ${row.generation}; a start needs one`,
            ),
          });
        if (generation > 0n && generation < row.generation)
          throw new RpcError("STALE_GENERATION", {
            cause: new Error(`${disk}: generation ${generation} is older than ${row.generation}`),
          });
      } else if (row !== undefined && row.owner !== node) {
        if (generation === 0n)
          throw new RpcError("FENCED", {
            cause: new Error(`${disk}: locked by ${row.owner} (generation ${row.generation})`),
          });
        if (generation <= row.generation)
          throw new RpcError("STALE_GENERATION", {
            cause: new Error(
              `${disk}: generation ${generation} is not newer than ${row.generation} held by ${row.owner}`,
            ),
          });
      }
      if (row !== undefined && row.owner === node && generation < row.generation && generation > 0n)
        throw new RpcError("STALE_GENERATION", {
          cause: new Error(`${disk}: generation ${generation} is older than ${row.generation}`),
        });
      if (row !== undefined && row.owner !== node && row.owner !== FREE)
        block.run(disk, row.owner, node, generation, now);
      unblock.run(disk, node);
      const keep = row !== undefined && row.generation > generation ? row.generation : generation;
      putLock.run(disk, node, keep, now);
    }
  };
}
