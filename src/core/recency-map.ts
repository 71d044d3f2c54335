/**
 * A Map kept in recency order (`touch` makes an entry the newest) whose
 * oldest entry is found and dropped in constant time: a Map of nodes on a
 * doubly linked list, oldest first.
 *
 * A plain Map in recency order (delete then set) finds its oldest entry with
 * `map.keys().next()`, which walks over every entry deleted from the front
 * since V8 last rebuilt the table. A rate limiter full at 100,000 buckets
 * that dropped its oldest that way spent 31 µs on each new caller of a flood
 * against 2 µs here (`node dist/bench/rate-limit-flood.js`, 7 December
 * 2026), and the lockout, which also counts every unauthenticated caller's
 * guesses, paid it twice. A long-lived iterator on the Map avoids the walk
 * but keeps every table V8 rebuilt alive until it moves, which it does only
 * when the map is full: memory grew with every call of a few busy callers.
 */
export interface RecencyMap<K, V> {
  get(key: K): V | undefined;
  /** Sets `key` to `value` as the newest entry (then drops the oldest beyond the bound). */
  touch(key: K, value: V): void;
  delete(key: K): boolean;
  /** The oldest entry, left in place. */
  oldest(): [K, V] | undefined;
  /** Drops the oldest entry. */
  dropOldest(): void;
  readonly size: number;
}

interface Node<K, V> {
  readonly key: K;
  value: V;
  older: Node<K, V> | undefined;
  newer: Node<K, V> | undefined;
}

/**
 * `max`: the most entries kept; a `touch` past it drops the oldest (default:
 * no bound, the caller drops what it must).
 */
export function createRecencyMap<K, V>(max = Number.POSITIVE_INFINITY): RecencyMap<K, V> {
  const nodes = new Map<K, Node<K, V>>();
  let oldest: Node<K, V> | undefined;
  let newest: Node<K, V> | undefined;
  const unlink = (node: Node<K, V>) => {
    if (node.older === undefined) oldest = node.newer;
    else node.older.newer = node.newer;
    if (node.newer === undefined) newest = node.older;
    else node.newer.older = node.older;
    node.older = undefined;
    node.newer = undefined;
  };
  const remove = (key: K): boolean => {
    const node = nodes.get(key);
    if (node === undefined) return false;
    unlink(node);
    nodes.delete(key);
    return true;
  };
  return {
    get: (key) => nodes.get(key)?.value,
    touch(key, value) {
      let node = nodes.get(key);
      if (node === undefined) {
        node = { key, value, older: undefined, newer: undefined };
        nodes.set(key, node);
      } else {
        node.value = value;
        if (node === newest) return;
        unlink(node);
      }
      node.older = newest;
      if (newest === undefined) oldest = node;
      else newest.newer = node;
      newest = node;
      while (nodes.size > max && oldest !== undefined) remove(oldest.key);
    },
    delete: remove,
    oldest: () => (oldest === undefined ? undefined : [oldest.key, oldest.value]),
    dropOldest() {
      if (oldest !== undefined) remove(oldest.key);
    },
    get size() {
      return nodes.size;
    },
  };
}
