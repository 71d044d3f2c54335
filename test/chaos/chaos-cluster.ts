import { type ChildProcess, spawn } from "node:child_process";
import { appendFileSync, cpSync, mkdirSync, openSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type * as grpc from "@grpc/grpc-js";
import { createServiceClient, openChannel, resolveContext } from "../../src/client/index.js";
import { MigrationService } from "../../src/gen/debvisor/v1/migration_pb.js";
import { NodeService } from "../../src/gen/debvisor/v1/node_pb.js";
import { VmService } from "../../src/gen/debvisor/v1/vm_pb.js";
import { AGENT_BIN, enrollAgent } from "../helpers/agent-process.js";
import {
  type DaemonProcess,
  onFreePort,
  runProcess,
  startDaemonProcess,
} from "../helpers/daemon-process.js";
import type { EtcdServer } from "../helpers/etcd-server.js";
import { hvctlInProcess } from "../helpers/hvctl-in-process.js";
import { CHAOS_TIMING } from "./chaos-bounds.js";

/** Typed clients of one daemon. */
export interface DaemonClients {
  readonly vms: ReturnType<typeof createServiceClient<typeof VmService>>;
  readonly nodes: ReturnType<typeof createServiceClient<typeof NodeService>>;
  readonly migrations: ReturnType<typeof createServiceClient<typeof MigrationService>>;
}

/** One control-plane daemon of the chaos cluster and what has been done to it. */
export interface ChaosDaemon {
  readonly name: string;
  readonly address: string;
  readonly clients: DaemonClients;
  state: "up" | "paused" | "dead";
  process: DaemonProcess | undefined;
}

/** One node's agent process and what has been done to it. */
export interface ChaosAgent {
  readonly node: string;
  readonly dir: string;
  state: "up" | "paused" | "dead";
  proc: ChildProcess | undefined;
}

/** Two daemons on one etcd, four agents on simulated hypervisors with shared simulated storage. */
export interface ChaosCluster {
  readonly dir: string;
  readonly sharedDir: string;
  readonly etcd: EtcdServer;
  readonly prefix: string;
  readonly daemons: readonly ChaosDaemon[];
  readonly agents: ReadonlyMap<string, ChaosAgent>;
  startAgent(node: string): void;
  killAgent(node: string): void;
  signalAgent(node: string, sig: "SIGSTOP" | "SIGCONT"): void;
  killDaemon(i: number): Promise<void>;
  startDaemon(i: number): Promise<void>;
  signalDaemon(i: number, sig: "SIGSTOP" | "SIGCONT"): void;
  /** `debvisor-agent fault --dir DIR ...` (another process, as an operator runs it). */
  fault(node: string, ...args: string[]): Promise<void>;
  close(): Promise<void>;
}

/** Builds the cluster in `dir` on `etcd`: daemons first, then enrolled agents, all running. */
export async function startChaosCluster(
  dir: string,
  etcd: EtcdServer,
  nodes: readonly string[],
): Promise<ChaosCluster> {
  const prefix = `/chaos-${process.pid}-${Date.now()}/`;
  const sharedDir = join(dir, "shared-storage");
  /** Each daemon's port, found free at its first start; restarts keep it (the agents dial it). */
  const ports: number[] = [];
  const daemonDirs = [join(dir, "rpcd-a"), join(dir, "rpcd-b")];
  const logs = join(dir, "logs");
  mkdirSync(logs, { recursive: true });
  const argsOf = (i: number) => {
    const d = daemonDirs[i] as string;
    const config = join(d, "rpcd.yaml");
    writeFileSync(
      config,
      JSON.stringify({
        simulation: { enabled: false },
        store: { backend: "etcd", endpoints: [etcd.endpoint], prefix },
        cluster: {
          heartbeatIntervalMs: CHAOS_TIMING.heartbeatIntervalMs,
          heartbeatMissedIntervals: CHAOS_TIMING.heartbeatMissedIntervals,
          fenceDelayMs: CHAOS_TIMING.fenceDelayMs,
          selfFenceWindowMs: CHAOS_TIMING.selfFenceWindowMs,
          runnerLeaseMs: CHAOS_TIMING.runnerLeaseMs,
          failover: {
            intervalMs: CHAOS_TIMING.failoverIntervalMs,
            restartLimit: 100,
            restartWindowMs: 60_000,
          },
        },
        storage: { replication: { scheduler: false } },
        panel: { enabled: false },
        audit: { path: join(d, "audit.log") },
      }),
    );
    return [
      "--dev",
      "--data-dir",
      d,
      "--listen",
      `127.0.0.1:${ports[i]}`,
      "--metrics-listen",
      "127.0.0.1:0",
      "--config",
      config,
    ];
  };
  mkdirSync(daemonDirs[0] as string, { recursive: true });
  const first = await onFreePort((port) => {
    ports[0] = port;
    return startDaemonProcess(argsOf(0));
  });
  // The second daemon shares the first's cluster CA (one cluster), in a data directory of its own.
  mkdirSync(daemonDirs[1] as string, { recursive: true });
  cpSync(join(daemonDirs[0] as string, "pki"), join(daemonDirs[1] as string, "pki"), {
    recursive: true,
  });
  const second = await onFreePort((port) => {
    ports[1] = port;
    return startDaemonProcess(argsOf(1));
  });
  const channels: grpc.Client[] = [];
  const daemons: ChaosDaemon[] = [first, second].map((p, i) => {
    const ctx = resolveContext(join(daemonDirs[i] as string, "hvctl.yaml"));
    const ch = openChannel(ctx);
    channels.push(ch);
    return {
      name: i === 0 ? "rpcd-a" : "rpcd-b",
      address: p.grpcAddress,
      clients: {
        vms: createServiceClient(VmService, ch),
        nodes: createServiceClient(NodeService, ch),
        migrations: createServiceClient(MigrationService, ch),
      },
      state: "up",
      process: p,
    };
  });
  const hvctl = (...args: string[]) =>
    hvctlInProcess(join(daemonDirs[0] as string, "hvctl.yaml"), ...args);
  const agents = new Map<string, ChaosAgent>();
  for (const node of nodes) {
    const agentDir = await enrollAgent(hvctl, first.grpcAddress, dir, node);
    writeFileSync(
      join(agentDir, "agent.yaml"),
      JSON.stringify({ reconnect: { initialMs: 100, maxMs: CHAOS_TIMING.reconnectMaxMs } }),
    );
    agents.set(node, { node, dir: agentDir, state: "dead", proc: undefined });
  }
  const servers = (k: number) => {
    const a = daemons.map((d) => d.address);
    return k % 2 === 0 ? a : [...a].reverse();
  };
  const startAgent = (node: string) => {
    const a = agents.get(node);
    if (a === undefined) throw new Error(`no agent ${node}`);
    const out = openSync(join(logs, `${node}.log`), "a");
    a.proc = spawn(
      process.execPath,
      [
        AGENT_BIN,
        "run",
        // Dies with this process, whatever ends it.
        "--exit-with-stdin",
        "--config",
        join(a.dir, "agent.yaml"),
        "--dir",
        a.dir,
        "--server",
        ...servers(nodes.indexOf(node)),
        "--driver",
        "sim",
        "--sim-vms",
        "0",
        "--sim-migration-ms",
        String(CHAOS_TIMING.migrationMs),
        "--sim-shared-dir",
        sharedDir,
        "--log-level",
        "warn",
      ],
      { stdio: ["pipe", out, out] },
    );
    a.state = "up";
  };
  for (const node of nodes) startAgent(node);
  const kill = (p: ChildProcess | undefined) => {
    if (p === undefined || p.exitCode !== null || p.signalCode !== null) return;
    p.kill("SIGCONT");
    p.kill("SIGKILL");
  };
  /** A daemon's log so far, appended to logs/<name>.log: kept with the run's directory when it fails. */
  const keepLog = (d: ChaosDaemon) => {
    const lines = d.process?.logs.splice(0) ?? [];
    if (lines.length > 0)
      appendFileSync(
        join(logs, `${d.name}.log`),
        lines.map((l) => `${JSON.stringify(l)}\n`).join(""),
      );
  };
  const daemonAt = (i: number) => {
    const d = daemons[i];
    if (d === undefined) throw new Error(`no daemon ${i}`);
    return d;
  };
  return {
    dir,
    sharedDir,
    etcd,
    prefix,
    daemons,
    agents,
    startAgent,
    killAgent(node) {
      const a = agents.get(node);
      kill(a?.proc);
      if (a !== undefined) a.state = "dead";
    },
    signalAgent(node, sig) {
      const a = agents.get(node);
      if (a?.proc === undefined || a.state === "dead") return;
      a.proc.kill(sig);
      a.state = sig === "SIGSTOP" ? "paused" : "up";
    },
    async killDaemon(i) {
      const d = daemonAt(i);
      const p = d.process;
      kill(p?.proc);
      await p?.exited;
      keepLog(d);
      d.state = "dead";
      d.process = undefined;
    },
    async startDaemon(i) {
      const d = daemonAt(i);
      d.process = await startDaemonProcess(argsOf(i), { timeoutMs: 60_000 });
      d.state = "up";
    },
    signalDaemon(i, sig) {
      const d = daemonAt(i);
      if (d.process === undefined || d.state === "dead") return;
      d.process.proc.kill(sig);
      d.state = sig === "SIGSTOP" ? "paused" : "up";
    },
    async fault(node, ...args) {
      const a = agents.get(node);
      if (a === undefined) throw new Error(`no agent ${node}`);
      const r = await runProcess(process.execPath, [AGENT_BIN, "fault", "--dir", a.dir, ...args]);
      if (r.code !== 0) throw new Error(`debvisor-agent fault ${args.join(" ")}: ${r.stderr}`);
    },
    async close() {
      for (const a of agents.values()) kill(a.proc);
      for (const d of daemons) kill(d.process?.proc);
      await Promise.all(daemons.map((d) => d.process?.exited));
      for (const d of daemons) keepLog(d);
      for (const ch of channels) ch.close();
    },
  };
}
