/**
 * Which nodes' records went away, from the watch-fed copy of `nodes/`: so
 * what this process keeps per node (drivers, liveness bookkeeping) is
 * dropped when the node is removed, by this process or another.
 */
import type { PrefixMirror } from "../store/index.js";

/**
 * Calls `removed` with the id of each node whose record leaves `mirror`
 * (a delete, or gone after a reload); returns the function that stops it.
 * A change to a record that is still there (a heartbeat) allocates nothing.
 */
export function followNodeRemovals(
  mirror: PrefixMirror<unknown>,
  removed: (id: string) => void,
): () => void {
  let present = new Set(mirror.values().keys());
  return mirror.onChange((id) => {
    const now = mirror.values();
    if (id !== undefined) {
      if (now.has(id)) present.add(id);
      else if (present.delete(id)) removed(id);
      return;
    }
    const before = present;
    present = new Set(now.keys());
    for (const gone of before) if (!now.has(gone)) removed(gone);
  });
}
