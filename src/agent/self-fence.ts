import { type Logger, RpcError } from "../core/index.js";
import {
  canRecover,
  type HypervisorDriver,
  monotonicNs,
  type SimulatedWatchdog,
} from "../drivers/index.js";

const MS = 1_000_000n;
/** Pet the watchdog with this deadline while self-fencing is off (window 0): far away, disarmed. */
const DISARMED_MS = 365 * 86_400_000;

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
   * Resolves once the node holds a confirmed lease (at once, unless past
   * the deadline): an HA VM started while the node is still fenced would be
   * stopped again at the next tick. Rejects with FENCED when no renewal
   * comes within the window.
   */
  leased(signal: AbortSignal): Promise<void>;
  /** Checks the clock and fences if the deadline passed, then runs `then`, in order with other calls. */
  guard<T>(then: () => T | Promise<T>): Promise<T>;
  close(): void;
}

/** The grace between the agent's deadline and the watchdog's: time to stop the HA VMs. */
export function watchdogGraceMs(windowMs: number): number {
  return Math.max(200, Math.min(5000, Math.floor(windowMs / 4)));
}

/** Creates the self-fence and starts its clock (a tick every quarter window, at most a second). */
export function createSelfFence(options: SelfFenceOptions): SelfFence {
  const { driver, logger: log, watchdog } = options;
  const now = options.now ?? monotonicNs;
  let windowMs = 0;
  /** Until when HA VMs may run (monotonic ns); undefined before any confirmation. */
  let deadline: bigint | undefined;
  let fenced = false;
  let sent = new Map<bigint, bigint>();
  let chain: Promise<unknown> = Promise.resolve();
  let lastTick = now();
  let tickMs = 1000;
  /** Starts waiting for a confirmed renewal. */
  const waiters = new Set<() => void>();
  const leasedNow = () => !(windowMs > 0 && deadline !== undefined && now() > deadline);

  // A restart within the window keeps the deadline the previous run earned.
  const previous = watchdog?.read();
  if (previous !== undefined && previous.windowMs > 0 && previous.windowMs < DISARMED_MS) {
    windowMs = previous.windowMs;
    deadline = previous.deadlineNs - BigInt(watchdogGraceMs(windowMs)) * MS;
  }

  async function check(): Promise<void> {
    const t = now();
    const gapMs = Number((t - lastTick) / MS);
    lastTick = t;
    if (gapMs > 2 * tickMs + 1000)
      log.warn({ gapMs }, "the agent was paused; checking fencing first");
    const expired = windowMs > 0 && deadline !== undefined && t > deadline;
    // A simulated node: any hypervisor call applies what its watchdog and storage did meanwhile.
    if (!expired && watchdog === undefined) return;
    const domains = await driver.list(AbortSignal.timeout(30_000));
    if (!expired || deadline === undefined) return;
    // Past the deadline no HA VM may run, including one started since the fence; a paused
    // one holds its disks open and could be resumed, so it is stopped too.
    const ha = domains.filter(
      (d) => (d.state === "running" || d.state === "paused") && options.isHa(d.id),
    );
    if (ha.length > 0)
      log.error(
        {
          windowMs,
          lateMs: Number((t - deadline) / MS),
          vms: ha.map((d) => d.id),
        },
        "self-fencing: no confirmed lease renewal within the window; hard-stopping HA vms",
      );
    let stopped = true;
    for (const d of ha)
      await driver.stop(d.id, { force: true, signal: AbortSignal.timeout(30_000) }).then(
        () => options.onFenced?.(d.id),
        (err: unknown) => {
          stopped = false;
          log.error({ err, vm: d.id }, "self-fence stop failed");
        },
      );
    // Only once none runs does the watchdog stop following the lapsed deadline.
    fenced = stopped;
  }

  function pet(): void {
    if (watchdog === undefined) return;
    const t = now();
    if (windowMs === 0) {
      watchdog.pet(t + BigInt(DISARMED_MS) * MS, DISARMED_MS);
      return;
    }
    const w = BigInt(windowMs) * MS;
    const grace = BigInt(watchdogGraceMs(windowMs)) * MS;
    const limit = fenced || deadline === undefined ? t + w : deadline < t + w ? deadline : t + w;
    watchdog.pet(limit + grace, windowMs);
  }

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
  const schedule = () => {
    clearInterval(timer);
    tickMs = windowMs === 0 ? 1000 : Math.max(50, Math.min(1000, Math.floor(windowMs / 4)));
    timer = setInterval(() => void guard(() => undefined), tickMs);
  };
  schedule();

  return {
    configure(ms) {
      if (ms === windowMs) return;
      log.info({ windowMs: ms }, ms === 0 ? "self-fencing off" : "self-fence window set");
      windowMs = ms;
      schedule();
    },
    newStream() {
      sent = new Map();
    },
    sending(sequence) {
      sent.set(sequence, now());
      // Only the latest few can still be confirmed.
      if (sent.size > 64) sent.delete(sent.keys().next().value as bigint);
    },
    renewed(sequence) {
      const at = sent.get(sequence);
      if (at === undefined || windowMs === 0) return;
      const next = at + BigInt(windowMs) * MS;
      if (deadline !== undefined && next <= deadline) return;
      deadline = next;
      for (const wake of waiters) wake();
      if (fenced && next > now()) {
        fenced = false;
        log.info(
          { windowMs },
          "lease renewals confirmed again; stopped HA vms wait for the control plane",
        );
        options.onRenewed?.();
      }
    },
    async leased(signal) {
      if (leasedNow()) return;
      log.info({ windowMs }, "an HA vm start waits for a confirmed lease renewal");
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
          Math.max(1000, windowMs),
        );
        waiters.add(wake);
        signal.addEventListener("abort", aborted, { once: true });
      });
    },
    guard,
    window: () => windowMs,
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
