import { type Logger, RpcError } from "../core/index.js";
import {
  type HypervisorDriver,
  monotonicNs,
  type RecoveringDriver,
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
  /** A new stream: heartbeat sequences start again. */
  newStream(): void;
  /** Heartbeat `sequence` (0: the Hello) is being sent now. */
  sending(sequence: bigint): void;
  /** The server renewed the node's liveness on heartbeat `sequence`. */
  renewed(sequence: bigint): void;
  /** Checks the clock and fences if the deadline passed, then runs `then`, in order with other calls. */
  guard<T>(then: () => T | Promise<T>): Promise<T>;
  /**
   * True while the deadline has passed and no renewal has moved it since:
   * an HA VM started now would be hard-stopped at the next check.
   */
  lapsed(): boolean;
  close(): void;
}

/**
 * `driver` refusing, while `fence` has lapsed, to start an HA VM or to
 * recover any VM here (FENCED): the start would succeed and the next
 * fencing check stop it again, so the operation would report a start that
 * does not hold. Refused, it fails; the control plane tries again once the
 * node's renewals are confirmed (seen in the chaos test: an agent woken
 * from SIGSTOP ran the starts queued for it, reported them SUCCEEDED and
 * hard-stopped the VMs 60 ms later).
 */
export function refuseStartsWhileLapsed<D extends HypervisorDriver>(
  driver: D,
  fence: Pick<SelfFence, "lapsed">,
  isHa: (vmId: string) => boolean,
): D {
  const refused = () =>
    new RpcError("FENCED", {
      message:
        "this node has had no confirmed lease renewal within its self-fence window; HA vms start once renewals are confirmed again",
    });
  const start: HypervisorDriver["start"] = (vmId, signal, options) =>
    fence.lapsed() && isHa(vmId) ? Promise.reject(refused()) : driver.start(vmId, signal, options);
  if (!("recover" in driver)) return { ...driver, start };
  const inner = driver as unknown as RecoveringDriver;
  const recover: RecoveringDriver["recover"] = (vmId, from, signal, options) =>
    fence.lapsed() ? Promise.reject(refused()) : inner.recover(vmId, from, signal, options);
  return { ...driver, start, recover };
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
    // Past the deadline no HA VM may run, including one started since the fence.
    const ha = domains.filter((d) => d.state === "running" && options.isHa(d.id));
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
      if (fenced && next > now()) {
        fenced = false;
        log.info(
          { windowMs },
          "lease renewals confirmed again; stopped HA vms wait for the control plane",
        );
      }
    },
    guard,
    lapsed: () => windowMs > 0 && deadline !== undefined && now() > deadline,
    close: () => clearInterval(timer),
  };
}
