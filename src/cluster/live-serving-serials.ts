import type { Logger } from "../core/index.js";
import { type KvStore, mirrorPrefix } from "../store/index.js";
import { RUNNERS_PREFIX, servingSerialOf } from "./runner-value.js";

/**
 * The server certificates the live control-plane processes serve, as their
 * runner keys say: a key goes with its process's lease, so a stopped
 * daemon's serial leaves. A daemon of a version that publishes none is not
 * in it.
 */
export interface LiveServingSerials {
  /** Runner id by serial served (lower-case hex), from this process's copy of the keys. */
  serials(): ReadonlyMap<string, string>;
  /** Called when the set of serials changes; returns the function that stops it. */
  onChange(listener: () => void): () => void;
  close(): void;
}

/**
 * Follows the runner keys through a watch-fed copy (no store read per
 * question). Renewals of the runner leases change no key: only a
 * registration, a publication or an expiry reaches the listeners, and only
 * when the serials changed. While the watch is down the last known keys
 * stay in force (a serial may then stay protected until it is back).
 */
export async function followLiveServingSerials(
  store: KvStore,
  logger: Logger,
): Promise<LiveServingSerials> {
  const mirror = await mirrorPrefix(
    store,
    RUNNERS_PREFIX,
    (kv) => servingSerialOf(kv.value),
    logger,
  );
  const collect = () => {
    const bySerial = new Map<string, string>();
    for (const [runner, serial] of mirror.values())
      if (serial !== undefined) bySerial.set(serial, runner);
    return bySerial;
  };
  let current = collect();
  const listeners = new Set<() => void>();
  mirror.onChange(() => {
    const next = collect();
    if (next.size === current.size && [...next.keys()].every((s) => current.has(s))) {
      current = next;
      return;
    }
    current = next;
    for (const l of [...listeners]) l();
  });
  return {
    serials: () => current,
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    close: () => mirror.close(),
  };
}
