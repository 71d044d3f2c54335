import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import pino from "pino";
import {
  AgentError,
  agentFiles,
  createSystemdNotifier,
  openRevokedServers,
  REVOKED_SERVERS_FILE,
} from "../client/index.js";
import { createOpenedResources, type Logger, type OpenedResources } from "../core/index.js";
import {
  createOperationExecutor,
  OPERATION_CAPABILITIES,
  openCopyGenerations,
  openOperationJournal,
  openSimulatedWatchdog,
} from "../drivers/index.js";
import type { AgentConfig } from "./agent-config.js";
import { lockAgentDirectoryWaiting } from "./agent-dir-lock.js";
import { describeFaults, watchFaults } from "./agent-faults.js";
import { runAgentLink } from "./agent-link.js";
import { createAgentLinkHandlers } from "./agent-link-handlers.js";
import { writeAgentPidFile } from "./agent-pid-file.js";
import { scheduleRenewal } from "./certificate-renewal.js";
import {
  createFencedVmReports,
  createResetHaVms,
  FENCED_OFF,
  FENCED_OFF_TOLD,
  type FencedVmReports,
  RESET_TOLD,
} from "./fenced-vm-reports.js";
import { openHostBoot, stoppedByReboot } from "./host-boot.js";
import { newDisksChecked } from "./new-disk-check.js";
import { enrolledNodeId, type NodeHypervisor, openNodeHypervisor } from "./node-hypervisor.js";
import { type NodeStorage, openNodeStorage } from "./node-storage.js";
import { createSelfFence, leasedStarts } from "./self-fence.js";
import { createStorageOperations, storageCapabilities } from "./storage-operations.js";
import { createTransferClient } from "./transfer-client.js";

/** How long a VM operation's result waits at most for the report sent before it. */
const REPORT_BEFORE_RESULT_MS = 5_000;

/** The agent's JSON logger on stdout. */
export function createAgentLogger(level: string): Logger {
  return pino({
    name: "debvisor-agent",
    level,
    redact: { paths: ["*.keyPem", "*.token"], censor: "[redacted]" },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  });
}

/**
 * `debvisor-agent run`: the node's long-running process. Settles operations
 * a previous run left unfinished, tells systemd it is ready (then pings its
 * watchdog), holds the stream to the control plane, runs what it is sent,
 * and renews its certificate when `renewAtFraction` of its life has passed.
 * Resolves after SIGTERM or SIGINT once the stream is closed; running
 * operations are left to the next start, which settles them. Whether it
 * stops or its start-up fails midway, what it opened is undone: its pid
 * file removed (while it still names this process), its signal handlers
 * and the faults watcher removed, the hypervisor closed, and last its
 * directory's lock released. Another agent running on the directory stops
 * it before it touches anything (an AgentError naming that agent's pid).
 */
export async function runAgent(config: AgentConfig, env: NodeJS.ProcessEnv): Promise<void> {
  if (config.servers.length === 0)
    throw new AgentError(
      "servers: at least one control-plane address (--server, DEBVISOR_AGENT_SERVERS)",
    );
  const log = createAgentLogger(config.logLevel);
  // What start-up opens is undone, newest first, when it fails midway as when the agent stops.
  const opened = createOpenedResources(log);
  try {
    await serve(config, env, log, opened);
  } finally {
    await opened.unwind();
  }
}

/** Aborted by SIGTERM or SIGINT, or when `opened` unwinds. */
function stopOnSignals(opened: OpenedResources): AbortController {
  const stop = new AbortController();
  // Undone, everything that follows the stop signal ends too (the self-fence's clock among them).
  opened.push("stop", () => stop.abort());
  // Kept until the unwinding: a second signal while stopping changes nothing (by default it killed the agent mid-way).
  const onSignal = () => stop.abort();
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  opened.push("signal handlers", () => {
    process.removeListener("SIGTERM", onSignal);
    process.removeListener("SIGINT", onSignal);
  });
  return stop;
}

/**
 * The node's hypervisor, and the host's boot as the agent kept it: the HA VMs a reboot
 * stopped (or this node self-fenced) since the agent last told them are told again through
 * `resetHa`, as a watchdog reset's are, and kept in the file until taken over (this process
 * may end before the control plane heard); those its storage fenced off, through
 * `fencedOff`; `tellStops` tells both once the reports exist. Part of `serve`.
 */
async function openHostHypervisor(
  config: AgentConfig,
  nodeId: string,
  log: Logger,
  faults: ReturnType<typeof watchFaults>,
  now: () => number,
  opened: OpenedResources,
) {
  const resetHa = createResetHaVms();
  const fencedOff = createResetHaVms();
  const boot = openHostBoot(config.dir, config.bootIdFile, log);
  const hv = openNodeHypervisor(config, nodeId, log, {
    now,
    onWatchdogReset: resetHa.stopped,
    onFencedOff: fencedOff.stopped,
    onHaRunning: (ids) => boot.sawRunning(ids),
    failMigrationAt: () => faults.current().failMigrationAt,
    holdMigrationAt: () => faults.current().holdMigrationAt,
  });
  opened.push("hypervisor", () => hv.close());
  const stoppedNow = await stoppedByReboot(boot, hv.domains, log, nodeId);
  boot.told(stoppedNow);
  resetHa.stopped(stoppedNow);
  /** Tells the stopped HA VMs, kept until then, through `fenced` from now on. */
  const tellStops = (fenced: FencedVmReports, now: () => number) => {
    resetHa.tellTo(fenced, now, (ids) => log.warn({ node: nodeId, vms: ids }, RESET_TOLD));
    const told = (ids: readonly string[]) => log.warn({ node: nodeId, vms: ids }, FENCED_OFF_TOLD);
    fencedOff.tellTo(fenced, now, told, FENCED_OFF);
  };
  return { hv, boot, tellStops };
}

/**
 * The driver operations run with: an HA VM starts only under a confirmed
 * lease (`leased`, the self-fence decides), and a new disk is refused where
 * this node's storage holds its name already.
 */
function operationsDriver(
  hv: NodeHypervisor,
  leased: (signal: AbortSignal) => Promise<void>,
  storage: NodeStorage | undefined,
) {
  return newDisksChecked(leasedStarts(hv.driver, leased, hv.isHa), storage?.driver, hv.nodeId);
}

/** {@link runAgent} once its logger is made; pushes onto `opened` everything it opens. */
async function serve(
  config: AgentConfig,
  env: NodeJS.ProcessEnv,
  log: Logger,
  opened: OpenedResources,
): Promise<void> {
  // Before anything in the directory is read or written: a second agent on it stops here.
  opened.push("directory lock", await lockAgentDirectoryWaiting(config.dir));
  const files = agentFiles(config.dir);
  const nodeId = enrolledNodeId(files);
  // Faults injected at run time (debvisor-agent fault): a partition cuts the stream at once.
  let cut = () => {};
  const faults = watchFaults(config.dir, (f) => {
    log.warn({ node: nodeId, faults: f }, `faults now: ${describeFaults(f)}`);
    if (f.partitioned) cut();
  });
  opened.push("faults watcher", () => faults.close());
  const now = () => Date.now() + faults.current().clockOffsetMs;
  const { hv, boot, tellStops } = await openHostHypervisor(
    config,
    nodeId,
    log,
    faults,
    now,
    opened,
  );
  opened.push("pid file", writeAgentPidFile(config.dir));
  const journal = openOperationJournal(config.dir);
  const notifier = createSystemdNotifier(env, log);
  opened.push("systemd notifier", () => notifier.close());
  const stop = stopOnSignals(opened);

  let send: (m: Parameters<typeof link.send>[0]) => boolean = () => false;
  let beat: () => Promise<void> = () => Promise.resolve();
  // The simulated storage starts with the disks of the node's domains; nothing is asked without storage.
  const storage = openNodeStorage(
    config,
    nodeId,
    config.storage.kind === "sim" ? (await hv.inventory(AbortSignal.timeout(30_000))).datasets : [],
  );
  // The server certificates refused as revoked: the stream's server, transfer relays and renewals alike.
  const revokedServers = openRevokedServers({
    path: join(config.dir, REVOKED_SERVERS_FILE),
    log,
  });
  const storageOps = createStorageOperations({
    storage,
    nodeId,
    send: (m) => void send(m),
    transfers: createTransferClient({
      files,
      server: () => link.server(),
      tlsServerName: config.tlsServerName,
      revokedServers,
    }),
  });
  const executor = createOperationExecutor({
    driver: operationsDriver(hv, (signal) => fence.leased(signal), storage),
    copies: openCopyGenerations(config.dir),
    define: hv.define,
    now,
    journal,
    send: (m) => void send(m),
    logger: log,
    signal: stop.signal,
    storage: (d, signal) => storageOps.run(d, signal),
    // A report first, so the control plane shows the VM as the operation left it when it
    // answers (the next heartbeat could be its whole interval away); not waited for long.
    beforeResult: () =>
      Promise.race([beat(), sleep(REPORT_BEFORE_RESULT_MS, undefined, { ref: false })]),
  });
  // HA VMs this node stopped on its own, told until the control plane takes them over (kept
  // in the boot file too: this process may end before the control plane heard).
  const fenced = createFencedVmReports(
    (m) => send(m),
    (vmId) => boot.taken(vmId),
    (vmId) => boot.fenced(vmId),
  );
  tellStops(fenced, now);
  // The node's own clock decides whether its HA VMs may still run; checked before anything acts.
  const fence = createSelfFence({
    driver: hv.driver,
    isHa: (vmId) => hv.isHa(vmId),
    watchdog:
      config.driver.kind === "sim"
        ? openSimulatedWatchdog(join(config.dir, "watchdog.json"), config.bootIdFile)
        : undefined,
    logger: log,
    // On the clock its reports are stamped with (a fault may offset it).
    onFenced: (vmId) => fenced.fenced(vmId, now()),
    // Told again once the control plane is back: what was sent while it was away may be lost.
    onRenewed: () => fenced.flush(),
  });
  stop.signal.addEventListener("abort", () => fence.close(), { once: true });
  await fence.guard(() => executor.recover());
  const capabilities = [
    `driver:${hv.driver.kind}`,
    ...OPERATION_CAPABILITIES,
    ...storageCapabilities(storage),
  ];
  const link = runAgentLink({
    files,
    servers: config.servers,
    tlsServerName: config.tlsServerName,
    reconnect: config.reconnect,
    heartbeatIntervalMs: config.heartbeatIntervalMs,
    logger: log,
    signal: stop.signal,
    held: () => faults.current().partitioned,
    revokedServers,
    // Armed, an agent retries within an eighth of its window (at least every 250 ms), so a
    // short control-plane restart costs the backoff little of the window.
    maxRetryMs: () =>
      fence.window() > 0 ? Math.max(250, Math.floor(fence.window() / 8)) : Infinity,
    ...createAgentLinkHandlers({
      nodeId,
      hv,
      storage,
      capabilities,
      fence,
      fenced,
      executor,
      storageOps,
      notifier,
      log,
      now,
    }),
  });
  send = (m) => link.send(m);
  beat = () => link.beat();
  cut = () => link.interrupt();
  const renewal = scheduleRenewal(
    config,
    log,
    () => link.server() ?? config.servers[0],
    stop.signal,
    revokedServers,
  );
  opened.push("certificate renewal", () => renewal.cancel());
  log.info({ node: nodeId, driver: hv.driver.kind, servers: config.servers }, "agent running");
  await notifier.ready(`node ${nodeId}: connecting`);
  await link.done;
  await notifier.stopping();
  await opened.unwind();
  log.info({ node: nodeId, running: executor.running() }, "agent stopped");
}
