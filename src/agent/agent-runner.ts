import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import pino from "pino";
import { AgentError, agentFiles, createSystemdNotifier, packageVersion } from "../client/index.js";
import type { Logger } from "../core/index.js";
import {
  createOperationExecutor,
  OPERATION_CAPABILITIES,
  openCopyGenerations,
  openOperationJournal,
  openSimulatedWatchdog,
} from "../drivers/index.js";
import type { DatasetRef } from "../gen/debvisor/v1/storage_pb.js";
import type { AgentConfig } from "./agent-config.js";
import { describeFaults, watchFaults } from "./agent-faults.js";
import { runAgentLink } from "./agent-link.js";
import { scheduleRenewal } from "./certificate-renewal.js";
import { enrolledNodeId, openNodeHypervisor } from "./node-hypervisor.js";
import { openNodeStorage } from "./node-storage.js";
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
 * operations are left to the next start, which settles them.
 */
export async function runAgent(config: AgentConfig, env: NodeJS.ProcessEnv): Promise<void> {
  if (config.servers.length === 0)
    throw new AgentError(
      "servers: at least one control-plane address (--server, DEBVISOR_AGENT_SERVERS)",
    );
  const log = createAgentLogger(config.logLevel);
  const files = agentFiles(config.dir);
  const nodeId = enrolledNodeId(files);
  // Faults injected at run time (debvisor-agent fault): a partition cuts the stream at once.
  let cut = () => {};
  const faults = watchFaults(config.dir, (f) => {
    log.warn({ node: nodeId, faults: f }, `faults now: ${describeFaults(f)}`);
    if (f.partitioned) cut();
  });
  const now = () => Date.now() + faults.current().clockOffsetMs;
  const hv = openNodeHypervisor(config, nodeId, log, {
    now,
    failMigrationAt: () => faults.current().failMigrationAt,
    holdMigrationAt: () => faults.current().holdMigrationAt,
  });
  // So an operator or a test can signal this very process: kill -STOP $(cat DIR/agent.pid).
  const pidFile = join(config.dir, "agent.pid");
  writeFileSync(pidFile, `${process.pid}\n`, { mode: 0o644 });
  const journal = openOperationJournal(config.dir);
  const notifier = createSystemdNotifier(env, log);
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once("SIGTERM", onSignal);
  process.once("SIGINT", onSignal);

  let send: (m: Parameters<typeof link.send>[0]) => boolean = () => false;
  let beat: () => Promise<void> = () => Promise.resolve();
  // The simulated storage starts with the disks of the node's domains; nothing is asked without storage.
  const storage = openNodeStorage(
    config,
    nodeId,
    config.storage.kind === "sim" ? (await hv.inventory(AbortSignal.timeout(30_000))).datasets : [],
  );
  const storageOps = createStorageOperations({
    storage,
    nodeId,
    send: (m) => void send(m),
    transfers: createTransferClient({
      files,
      server: () => link.server(),
      tlsServerName: config.tlsServerName,
    }),
  });
  const executor = createOperationExecutor({
    // An HA VM starts only under a confirmed lease (the fence below decides).
    driver: leasedStarts(hv.driver, (signal) => fence.leased(signal), hv.isHa),
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
  // HA VMs this node stopped on its own: told to the control plane on every
  // new stream until an operation on the VM (its restart, or an operator's
  // call) shows the control plane has taken it over.
  const fencedVms = new Map<string, number>();
  const tellFenced = (vmId: string, at: number) =>
    send({
      kind: {
        case: "event",
        value: {
          kind: "self-fenced",
          vmId,
          message: "hard-stopped: no confirmed lease renewal within the self-fence window",
          at: { seconds: BigInt(Math.floor(at / 1000)), nanos: (at % 1000) * 1_000_000 },
        },
      },
    });
  const flushFenced = () => {
    for (const [vmId, at] of fencedVms) if (!tellFenced(vmId, at)) return;
  };
  // The node's own clock decides whether its HA VMs may still run; checked before anything acts.
  const fence = createSelfFence({
    driver: hv.driver,
    isHa: (vmId) => hv.isHa(vmId),
    watchdog:
      config.driver.kind === "sim"
        ? openSimulatedWatchdog(join(config.dir, "watchdog.json"))
        : undefined,
    logger: log,
    onFenced: (vmId) => {
      // On the clock its reports are stamped with (a fault may offset it).
      const at = now();
      fencedVms.set(vmId, at);
      tellFenced(vmId, at);
    },
    // Told again once the control plane is back: what was sent while it was away may be lost.
    onRenewed: () => flushFenced(),
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
    // Armed, an agent retries within an eighth of its window (at least every 250 ms), so a
    // short control-plane restart costs the backoff little of the window.
    maxRetryMs: () =>
      fence.window() > 0 ? Math.max(250, Math.floor(fence.window() / 8)) : Infinity,
    async hello() {
      await fence.guard(() => {
        fence.newStream();
        fence.sending(0n);
      });
      const { health, datasets } = await hv.inventory(AbortSignal.timeout(30_000));
      const ms = now();
      return {
        kind: {
          case: "hello",
          value: {
            info: hv.info,
            agentVersion: packageVersion(),
            capabilities,
            health,
            datasets: withStorage(datasets, storage?.datasets() ?? []),
            sentAt: { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 },
          },
        },
      };
    },
    async heartbeat(sequence) {
      await fence.guard(() => fence.sending(sequence));
      const { health } = await hv.inventory(AbortSignal.timeout(30_000));
      return { kind: { case: "heartbeat", value: { health, sequence } } };
    },
    onWelcome(welcome, server) {
      const serverMs =
        Number(welcome.serverTime?.seconds ?? 0n) * 1000 +
        Math.floor((welcome.serverTime?.nanos ?? 0) / 1e6);
      log.info(
        { server, serverId: welcome.serverId, skewMs: Date.now() - serverMs, node: nodeId },
        "connected to the control plane",
      );
      void notifier.status(`connected to ${server}`);
      // The server recorded the Hello before it welcomed: that is the stream's first renewal.
      void fence.guard(() => {
        fence.configure(welcome.selfFenceWindowMs);
        fence.renewed(0n);
        flushFenced();
      });
    },
    onMessage(m) {
      const k = m.kind;
      void fence.guard(() => {
        if (k.case === "dispatch") {
          fencedVms.delete(k.value.vmId);
          executor.dispatch(k.value);
        } else if (k.case === "cancel") executor.cancel(k.value.operationId);
        else if (k.case === "leaseRenewed") fence.renewed(k.value.sequence);
        else if (k.case === "transferTicket")
          storageOps.ticket(k.value.operationId, k.value.ticket);
      });
    },
    onDown(reason) {
      void notifier.status(`reconnecting: ${reason}`);
    },
  });
  send = (m) => link.send(m);
  beat = () => link.beat();
  cut = () => link.interrupt();
  const renewal = scheduleRenewal(
    config,
    log,
    () => link.server() ?? config.servers[0],
    stop.signal,
  );
  log.info({ node: nodeId, driver: hv.driver.kind, servers: config.servers }, "agent running");
  await notifier.ready(`node ${nodeId}: connecting`);
  await link.done;
  faults.close();
  hv.close();
  rmSync(pidFile, { force: true });
  renewal.cancel();
  await notifier.stopping();
  notifier.close();
  process.removeListener("SIGTERM", onSignal);
  process.removeListener("SIGINT", onSignal);
  log.info({ node: nodeId, running: executor.running() }, "agent stopped");
}

/** The VMs' disks and the storage's datasets, each once. */
function withStorage(disks: DatasetRef[], held: DatasetRef[]): DatasetRef[] {
  const seen = new Map<string, DatasetRef>();
  for (const d of [...disks, ...held]) seen.set(`${d.backend}:${d.pool}/${d.name}`, d);
  return [...seen.values()];
}
