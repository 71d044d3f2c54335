import { randomBytes } from "node:crypto";
import { type Logger, RpcError, timeoutSignal } from "../core/index.js";
import type { KvStore, Lease } from "../store/index.js";
import { encodeRunnerValue, RUNNERS_PREFIX as PREFIX } from "./runner-value.js";

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
  /**
   * Writes the serial this process serves now into its key, soon (its TLS
   * material changed); at the latest the next renewal tick writes it.
   */
  publishServing(): void;
  close(): Promise<void>;
}

/**
 * `runners.isAlive`, asking once per runner however often it is called: one
 * pass over many records of the same runner asks the store once.
 */
export function askOnce(
  runners: Pick<RunnerRegistry, "isAlive">,
  signal?: AbortSignal,
): (runnerId: string) => Promise<boolean> {
  const asked = new Map<string, Promise<boolean>>();
  return (runnerId) => {
    let got = asked.get(runnerId);
    if (got === undefined) {
      got = runners.isAlive(runnerId, signal);
      asked.set(runnerId, got);
    }
    return got;
  };
}

/** Share of the TTL a lease may go unrenewed before this process takes it as lost. */
const LOST_AFTER = 0.8;

/**
 * Registers this process as a runner and keeps its lease alive, one renewal
 * at a time. A renewal that fails is tried again at the next tick while the
 * lease is surely alive; the lease is taken as lost (`onLost`, once per
 * loss, then a new registration) when etcd says it expired, or when
 * LOST_AFTER of its TTL passed since the last renewal that succeeded was
 * sent (etcd renews on receipt: a slow answer must not stretch the margin),
 * as another process may then take it for dead.
 */
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
  /**
   * The serial of the server certificate this process serves, written in its
   * key for the other daemons (docs/security.md: a live daemon's certificate
   * is never told to agents as revoked). Read at each registration and tick.
   */
  serving: () => string | undefined = () => undefined,
): Promise<RunnerRegistry> {
  const closing = new AbortController();
  /** The value the key holds now (written by the last registration or publication). */
  let written = "";
  /** Registers on a new lease; resolves with it and when it was granted. */
  const register = async () => {
    const sentAt = performance.now();
    const granted = await store.grantLease(ttlMs, { signal: closing.signal });
    const value = encodeRunnerValue(id, serving());
    try {
      await store.put(PREFIX + id, new TextEncoder().encode(value), {
        lease: granted.id,
        signal: closing.signal,
      });
      written = value;
    } catch (err) {
      // Given up (closing) or failed, the put may still have applied: nothing keeps it.
      await granted.revoke().catch(() => undefined);
      throw err;
    }
    return { granted, sentAt };
  };
  const first = await register();
  let lease: Lease = first.granted;
  let renewedAt = first.sentAt;
  let lost = false;
  const renew = async () => {
    if (!lost) {
      const left = renewedAt + ttlMs * LOST_AFTER - performance.now();
      const sentAt = performance.now();
      try {
        if (left <= 0) throw new RpcError("DEADLINE_EXCEEDED");
        await lease.keepAlive({
          signal: timeoutSignal(Math.ceil(left), closing.signal),
        });
        renewedAt = sentAt;
        return;
      } catch (err) {
        if (closing.signal.aborted) return;
        const expired = err instanceof RpcError && err.reason === "LEASE_NOT_FOUND";
        if (!expired && performance.now() < renewedAt + ttlMs * LOST_AFTER) {
          logger.warn({ err }, "runner lease renewal failed; trying again");
          return;
        }
        // Our migrations may meanwhile have been claimed by someone else; the
        // runner field of each record says who owns it now, and our writes check it.
        logger.warn(
          { err },
          "runner lease lost; stopping this process's migrations, registering again",
        );
        lost = true;
        onLost();
      }
    }
    const old = lease;
    const next = await register();
    if (closing.signal.aborted) {
      await next.granted.revoke().catch(() => undefined);
      return;
    }
    lease = next.granted;
    renewedAt = next.sentAt;
    lost = false;
    await old.revoke().catch(() => undefined);
  };
  /**
   * Writes the serving serial when it changed: a comparison per tick, a write
   * only after a TLS change. One that fails is tried again at the next tick
   * (a lost lease: the new registration writes it).
   */
  const publish = async () => {
    const value = encodeRunnerValue(id, serving());
    if (lost || value === written || closing.signal.aborted) return;
    try {
      await store.put(PREFIX + id, new TextEncoder().encode(value), {
        lease: lease.id,
        signal: closing.signal,
      });
      written = value;
    } catch (err) {
      if (!closing.signal.aborted)
        logger.warn({ err }, "serving serial not published in the runner key; trying again");
    }
  };
  let renewing: Promise<void> | undefined;
  /** Renewals and publications, one at a time: a write on a lease being replaced would outlive it. */
  const step = (run: () => Promise<void>) => {
    renewing ??= run()
      .catch((err: unknown) => {
        if (!closing.signal.aborted) logger.error({ err }, "runner lease renewal failed");
      })
      .finally(() => {
        renewing = undefined;
      });
  };
  const timer = setInterval(
    () => step(() => renew().then(publish)),
    Math.max(100, Math.floor(ttlMs / 3)),
  );
  timer.unref();
  return {
    id,
    async isAlive(runnerId, signal) {
      return (await store.get(PREFIX + runnerId, { signal })) !== undefined;
    },
    publishServing: () => step(publish),
    async close() {
      clearInterval(timer);
      closing.abort();
      await renewing;
      await lease.revoke().catch(() => undefined);
    },
  };
}
