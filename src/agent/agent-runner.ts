import { X509Certificate } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pino from "pino";
import {
  AgentError,
  agentFiles,
  createSystemdNotifier,
  packageVersion,
  renew,
} from "../client/index.js";
import type { Logger } from "../core/index.js";
import {
  createOperationExecutor,
  OPERATION_CAPABILITIES,
  openOperationJournal,
} from "../drivers/index.js";
import type { AgentConfig } from "./agent-config.js";
import { describeFaults, watchFaults } from "./agent-faults.js";
import { runAgentLink } from "./agent-link.js";
import { enrolledNodeId, openNodeHypervisor } from "./node-hypervisor.js";

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
  const executor = createOperationExecutor({
    driver: hv.driver,
    define: hv.define,
    now,
    journal,
    send: (m) => void send(m),
    logger: log,
    signal: stop.signal,
  });
  await executor.recover();
  const capabilities = [`driver:${hv.driver.kind}`, ...OPERATION_CAPABILITIES];
  const link = runAgentLink({
    files,
    servers: config.servers,
    tlsServerName: config.tlsServerName,
    reconnect: config.reconnect,
    heartbeatIntervalMs: config.heartbeatIntervalMs,
    logger: log,
    signal: stop.signal,
    held: () => faults.current().partitioned,
    async hello() {
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
            datasets,
            sentAt: { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 },
          },
        },
      };
    },
    async heartbeat(sequence) {
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
    },
    onMessage(m) {
      if (m.kind.case === "dispatch") executor.dispatch(m.kind.value);
      else if (m.kind.case === "cancel") executor.cancel(m.kind.value.operationId);
    },
    onDown(reason) {
      void notifier.status(`reconnecting: ${reason}`);
    },
  });
  send = (m) => link.send(m);
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
  clearTimeout(renewal.timer);
  await notifier.stopping();
  notifier.close();
  process.removeListener("SIGTERM", onSignal);
  process.removeListener("SIGINT", onSignal);
  log.info({ node: nodeId, running: executor.running() }, "agent stopped");
}

/** Renews the certificate `renewAtFraction` into its life, through the server the stream is on. */
function scheduleRenewal(
  config: AgentConfig,
  log: Logger,
  server: () => string | undefined,
  signal: AbortSignal,
): { timer: NodeJS.Timeout | undefined } {
  const state: { timer: NodeJS.Timeout | undefined } = { timer: undefined };
  const plan = (retryMs?: number) => {
    if (signal.aborted) return;
    const cert = new X509Certificate(readFileSync(agentFiles(config.dir).cert));
    const from = Date.parse(cert.validFrom);
    const to = Date.parse(cert.validTo);
    const at = from + (to - from) * config.renewAtFraction;
    const wait = retryMs ?? Math.max(1000, at - Date.now());
    state.timer = setTimeout(
      () => {
        const target = server();
        if (target === undefined) return plan(60_000);
        renew({ server: target, dir: config.dir, tlsServerName: config.tlsServerName }).then(
          (r) => {
            log.info({ serial: r.serial }, "certificate renewed");
            plan();
          },
          (err: unknown) => {
            log.warn({ err }, "certificate renewal failed; retrying in a minute");
            plan(60_000);
          },
        );
      },
      Math.min(2 ** 31 - 1, wait),
    );
    state.timer.unref();
  };
  plan();
  return state;
}
