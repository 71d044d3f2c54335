/**
 * A Map kept in recency order (`touch` makes an entry the newest) whose
 * oldest entry is found in constant time however many were dropped before.
 *
 * `map.keys().next()` on a plain Map walks over every entry deleted from its
 * front since the table was last rebuilt: V8 leaves a hole per delete until
 * the table fills. A rate limiter full at 100,000 buckets that dropped its
 * oldest that way spent 32 µs on each new caller of a flood, against 1.8 µs
 * on this map (`node dist/bench/rate-limit-flood.js`, 7 December 2026), and
 * the lockout, which also counts every unauthenticated caller's guesses,
 * paid it twice. Here one iterator stays open and only moves forward: each
 * hole is passed once.
 */
export interface RecencyMap<K, V> {
  get(key: K): V | undefined;
  /** Sets `key` to `value` as the newest entry. */
  touch(key: K, value: V): void;
  delete(key: K): boolean;
  /** The oldest entry, left in place. */
  oldest(): [K, V] | undefined;
  /** Drops the oldest entry. */
  dropOldest(): void;
  readonly size: number;
}

export function createRecencyMap<K, V>(): RecencyMap<K, V> {
  const map = new Map<K, V>();
  // Every entry before the cursor has been deleted, but `head`: the cursor's
  // last answer, still the oldest while it is neither touched nor deleted.
  let cursor = map.entries();
  let head: [K, V] | undefined;
  const forget = (key: K) => {
    if (head !== undefined && head[0] === key) head = undefined;
  };
  const oldest = (): [K, V] | undefined => {
    if (head !== undefined) return head;
    let next = cursor.next();
    // A finished iterator stays finished: the map was empty, so start again.
    if (next.done === true) {
      cursor = map.entries();
      next = cursor.next();
    }
    head = next.done === true ? undefined : next.value;
    return head;
  };
  return {
    get: (key) => map.get(key),
    touch(key, value) {
      forget(key);
      map.delete(key);
      map.set(key, value);
    },
    delete(key) {
      forget(key);
      return map.delete(key);
    },
    oldest,
    dropOldest() {
      const first = oldest();
      if (first === undefined) return;
      head = undefined;
      map.delete(first[0]);
    },
    get size() {
      return map.size;
    },
  };
}
