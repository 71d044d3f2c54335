import { randomBytes } from "node:crypto";
import type { Logger } from "../core/index.js";
import type { KvStore, Lease } from "../store/index.js";

const PREFIX = "runners/";
/** How every runner id starts (claims by older daemons, `host:pid`, do not). */
const ID_PREFIX = "r-";

/** A new runner id for this process. */
export function newRunnerId(): string {
  return `${ID_PREFIX}${randomBytes(6).toString("hex")}`;
}

/** Whether `id` names a runner of the registry, whose liveness it can tell. */
export function isRunnerId(id: string): boolean {
  return id.startsWith(ID_PREFIX);
}

/**
 * Which control-plane processes are alive. Each process registers a key
 * under `runners/` attached to a lease it keeps alive; when a process dies
 * its lease expires, its key goes, and the migrations it was running become
 * orphans another process (or its own successor) reconciles.
 */
export interface RunnerRegistry {
  /** This process's runner id. */
  readonly id: string;
  isAlive(runnerId: string, signal?: AbortSignal): Promise<boolean>;
  close(): Promise<void>;
}

/** Registers this process as a runner and keeps its lease alive. */
export async function registerRunner(
  store: KvStore,
  id: string,
  ttlMs: number,
  logger: Logger,
  /**
   * Called when the lease was found expired, before registering again:
   * another process may already be settling this one's migrations, so they
   * must stop here.
   */
  onLost: () => void = () => {},
): Promise<RunnerRegistry> {
  let lease: Lease = await store.grantLease(ttlMs);
  await store.put(PREFIX + id, new TextEncoder().encode(id), { lease: lease.id });
  const renew = async () => {
    try {
      await lease.keepAlive();
    } catch (err) {
      // Expired (the process stalled past its TTL): our migrations may
      // meanwhile have been claimed by someone else; the runner field of
      // each record says who owns it now, and our writes check it.
      logger.warn(
        { err },
        "runner lease lost; stopping this process's migrations, registering again",
      );
      onLost();
      lease = await store.grantLease(ttlMs);
      await store.put(PREFIX + id, new TextEncoder().encode(id), { lease: lease.id });
    }
  };
  const timer = setInterval(
    () => {
      renew().catch((err: unknown) => logger.error({ err }, "runner lease renewal failed"));
    },
    Math.max(100, Math.floor(ttlMs / 3)),
  );
  timer.unref();
  return {
    id,
    async isAlive(runnerId, signal) {
      return (await store.get(PREFIX + runnerId, { signal })) !== undefined;
    },
    async close() {
      clearInterval(timer);
      await lease.revoke().catch(() => undefined);
    },
  };
}
