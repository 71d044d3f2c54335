/**
 * The calls waiting for a confirmed lease renewal (an HA VM start, a
 * recover): woken by each renewal, failed with FENCED when none leaving
 * half a window comes within the window.
 */
import { type Logger, RpcError } from "../core/index.js";
import { leasedAt, MS, type SelfFenceState } from "./self-fence-state.js";

/** The waiters for {@link SelfFence.leased}. */
export interface LeaseWaiters {
  /** Resolves once the node holds a confirmed lease; see {@link SelfFence.leased}. */
  leased(signal: AbortSignal): Promise<void>;
  /** A renewal moved the deadline: wakes every waiter (each resolves if leased now). */
  wakeAll(): void;
}

/** Creates the waiters over the shared state, on the monotonic clock `now`. */
export function createLeaseWaiters(
  state: SelfFenceState,
  now: () => bigint,
  log: Logger,
): LeaseWaiters {
  /** Starts waiting for a confirmed renewal. */
  const waiters = new Set<() => void>();
  /**
   * Leased for half a window more, not only now: a start in the lease's last
   * moments was undone by the node's own fence when the next renewals came
   * late (an HA VM started, hard-stopped 0.6 s later, then started again, in
   * the V6 test under load). A renewal confirmed within half a window of its
   * heartbeat always leaves that much.
   */
  const leasedNow = () => leasedAt(state, now() + BigInt(Math.floor(state.windowMs / 2)) * MS);

  return {
    wakeAll() {
      for (const wake of waiters) wake();
    },
    async leased(signal) {
      if (leasedNow()) return;
      log.info({ windowMs: state.windowMs }, "an HA vm start waits for a confirmed lease renewal");
      await new Promise<void>((resolve, reject) => {
        const done = (err?: unknown) => {
          clearTimeout(timeout);
          waiters.delete(wake);
          signal.removeEventListener("abort", aborted);
          if (err === undefined) resolve();
          else reject(err);
        };
        const wake = () => {
          if (leasedNow()) done();
        };
        const aborted = () => done(new RpcError("CANCELLED"));
        const timeout = setTimeout(
          () =>
            done(
              new RpcError("FENCED", {
                message: "no confirmed lease renewal within the self-fence window; not started",
              }),
            ),
          Math.max(1000, state.windowMs),
        );
        waiters.add(wake);
        signal.addEventListener("abort", aborted, { once: true });
      });
    },
  };
}
