/**
 * The node's self-fence: on its own monotonic clock it stops its HA VMs
 * once lease renewals stop being confirmed. Composed from the shared state
 * (`self-fence-state.ts`), the clock check and watchdog pet
 * (`fence-check.ts`) and the lease waiters (`lease-waiters.ts`).
 */
import { createRecencyMap, type Logger } from "../core/index.js";
import {
  canRecover,
  type HypervisorDriver,
  monotonicNs,
  type SimulatedWatchdog,
} from "../drivers/index.js";
import { createFenceCheck } from "./fence-check.js";
import { createLeaseWaiters } from "./lease-waiters.js";
import { MS, restoreSelfFenceState } from "./self-fence-state.js";

export { watchdogGraceMs } from "./self-fence-state.js";

/** Heartbeats whose send time is kept for their renewal: only the latest can still be confirmed. */
const SENT_REMEMBERED = 64;

/** Options of {@link createSelfFence}. */
export interface SelfFenceOptions {
  readonly driver: HypervisorDriver;
  /** Whether a domain is highly available: these are stopped. */
  isHa(vmId: string): boolean;
  /** The node's (simulated) hardware watchdog, if it has one. */
  readonly watchdog?: SimulatedWatchdog;
  readonly logger: Logger;
  /** The host's monotonic clock in ns (default process.hrtime.bigint()); never the wall clock. */
  readonly now?: () => bigint;
  /** Told of each VM it hard-stopped, to report to the control plane. */
  readonly onFenced?: (vmId: string) => void;
  /** Told when renewals are confirmed again after a fence (the control plane is back). */
  readonly onRenewed?: () => void;
}

/**
 * The agent's half of "a VM never runs twice": the control plane restarts
 * a node's VMs elsewhere only after the node's liveness lapsed and the
 * fence delay passed, so the node must have stopped them by then on its
 * own clock. Every heartbeat's send time is remembered; a LeaseRenewed for
 * it (or the Welcome, for the Hello) moves the deadline to that send time
 * plus the window. Past the deadline the HA VMs are hard-stopped. The
 * watchdog is petted with the deadline plus a grace, so a frozen agent's
 * node is reset (every domain stopped) soon after it would have fenced.
 *
 * Every entry point runs {@link SelfFence.guard} first and one at a time:
 * after a pause (SIGSTOP, a stalled event loop) the missed deadline is
 * acted on before a dispatch runs, a heartbeat goes out or a renewal is
 * accepted.
 */
export interface SelfFence {
  /** The window of the server's Welcome (0: self-fencing off). */
  configure(windowMs: number): void;
  /** The self-fence window the control plane set (0: none yet, or disarmed). */
  window(): number;
  /** A new stream: heartbeat sequences start again. */
  newStream(): void;
  /** Heartbeat `sequence` (0: the Hello) is being sent now. */
  sending(sequence: bigint): void;
  /** The server renewed the node's liveness on heartbeat `sequence`. */
  renewed(sequence: bigint): void;
  /**
   * Resolves once the node holds a confirmed lease for at least half a
   * window more (at once, unless within that of the deadline): an HA VM
   * started while the node is fenced, or about to be, would be stopped
   * again at the next tick. Rejects with FENCED when no such renewal comes
   * within the window.
   */
  leased(signal: AbortSignal): Promise<void>;
  /** Checks the clock and fences if the deadline passed, then runs `then`, in order with other calls. */
  guard<T>(then: () => T | Promise<T>): Promise<T>;
  close(): void;
}

/** Creates the self-fence and starts its clock (a tick every quarter window, at most a second). */
export function createSelfFence(options: SelfFenceOptions): SelfFence {
  const { logger: log } = options;
  const now = options.now ?? monotonicNs;
  const state = restoreSelfFenceState(now(), options.watchdog);
  let sent = createRecencyMap<bigint, bigint>(SENT_REMEMBERED);
  let chain: Promise<unknown> = Promise.resolve();
  const waiters = createLeaseWaiters(state, now, log);
  const { check, pet } = createFenceCheck(state, options, now);

  function guard<T>(then: () => T | Promise<T>): Promise<T> {
    const run = chain.then(async () => {
      await check().catch((err: unknown) => log.error({ err }, "fencing check failed"));
      pet();
      return then();
    });
    chain = run.catch(() => undefined);
    return run;
  }

  let timer: NodeJS.Timeout | undefined;
  /** A tick queued or running: the next waits for it. Past the deadline each check lists the
   * domains, which can be slow (libvirt); ticks queued behind slow checks piled up without
   * bound, and every renewal, operation and heartbeat waited behind them all. */
  let ticking = false;
  const tick = () => {
    if (ticking) return;
    ticking = true;
    void guard(() => undefined).finally(() => {
      ticking = false;
    });
  };
  const schedule = () => {
    clearInterval(timer);
    state.tickMs =
      state.windowMs === 0 ? 1000 : Math.max(50, Math.min(1000, Math.floor(state.windowMs / 4)));
    timer = setInterval(tick, state.tickMs);
  };
  schedule();

  return {
    configure(ms) {
      if (ms === state.windowMs) return;
      log.info({ windowMs: ms }, ms === 0 ? "self-fencing off" : "self-fence window set");
      state.windowMs = ms;
      schedule();
    },
    newStream() {
      sent = createRecencyMap(SENT_REMEMBERED);
    },
    sending(sequence) {
      sent.touch(sequence, now());
    },
    renewed(sequence) {
      const at = sent.get(sequence);
      if (at === undefined || state.windowMs === 0) return;
      const next = at + BigInt(state.windowMs) * MS;
      if (state.deadline !== undefined && next <= state.deadline) return;
      state.deadline = next;
      waiters.wakeAll();
      if (state.fenced && next > now()) {
        state.fenced = false;
        log.info(
          { windowMs: state.windowMs },
          "lease renewals confirmed again; stopped HA vms wait for the control plane",
        );
        options.onRenewed?.();
      }
    },
    leased: waiters.leased,
    guard,
    window: () => state.windowMs,
    close: () => clearInterval(timer),
  };
}

/**
 * The driver operations run with: a start of an HA VM, and any recover,
 * first waits for a confirmed lease ({@link SelfFence.leased}), so the
 * control plane's restart after an outage is not undone by the node's own
 * fence a tick later (the VM would start twice).
 */
export function leasedStarts(
  driver: HypervisorDriver,
  leased: SelfFence["leased"],
  isHa: (vmId: string) => boolean,
): HypervisorDriver {
  const start: HypervisorDriver["start"] = async (vmId, signal, startOptions) => {
    if (isHa(vmId)) await leased(signal);
    return driver.start(vmId, signal, startOptions);
  };
  const own: PropertyDescriptorMap = { start: { value: start, enumerable: true } };
  if (canRecover(driver)) {
    const recover: typeof driver.recover = async (...args) => {
      await leased(args[2]);
      return driver.recover(...args);
    };
    own.recover = { value: recover, enumerable: true };
  }
  // Defined, not assigned: drivers are often frozen, and the rest is inherited as it is.
  return Object.create(driver, own) as HypervisorDriver;
}
