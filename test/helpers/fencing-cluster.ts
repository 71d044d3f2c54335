import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type AgentOperations, createAgentOperations } from "../../src/cluster/index.js";
import { systemClock } from "../../src/core/index.js";
import {
  OperationPhase,
  type OperationRecord,
} from "../../src/gen/debvisor/store/v1/agent_records_pb.js";
import type { OperationKind } from "../../src/gen/debvisor/v1/agent_pb.js";
import { createEtcdStore, type KvStore } from "../../src/store/index.js";
import { type AgentProcess, enrollAgent, startAgent } from "./agent-process.js";
import { agentStatus } from "./agent-status.js";
import { type DaemonProcess, onFreePort, startDaemonProcess } from "./daemon-process.js";
import type { EtcdServer } from "./etcd-server.js";
import { eventually } from "./eventually.js";
import { hvctlInProcess } from "./hvctl-in-process.js";

/**
 * One control plane on etcd (restartable on the same port) and agent
 * processes with simulated hypervisors sharing one simulated storage
 * directory (disk locks), for the fencing tests.
 */
export interface FencingCluster {
  readonly dir: string;
  readonly store: KvStore;
  readonly ops: AgentOperations;
  readonly agents: Map<string, AgentProcess>;
  /** The daemon now (replaced by {@link FencingCluster.startDaemon}). */
  daemon(): DaemonProcess;
  /** Starts (again) the node's agent. */
  run(node: string): AgentProcess;
  /**
   * A node's domains as its hypervisor reports them: what `debvisor-agent
   * status` prints, read in this process (opened read-only and closed again).
   */
  domains(node: string): Promise<Record<string, string>>;
  /** What each node's hypervisor really did: "action vm" lines. */
  actions(node: string): string[];
  submit(
    node: string,
    id: string,
    kind: OperationKind,
    vmId: string,
    generation: bigint,
    params?: Record<string, string>,
  ): Promise<OperationRecord>;
  waitDone(node: string, id: string, timeoutMs?: number): Promise<OperationRecord>;
  /** `hvctl ARGS...` against the daemon, as its admin. */
  hvctl(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }>;
  stopDaemon(): Promise<void>;
  startDaemon(): Promise<void>;
  close(): Promise<void>;
}

/** A self-fence window of 3 s: short enough for a test, long enough for a loaded machine. */
export const FAST_WINDOW_MS = 3000;

/**
 * Short timings with the failover controller on: NOT_READY after 2 s,
 * self-fence after 3 s, restarts elsewhere after 4 s more, a pass every 500 ms.
 */
export const FAST_HA_CLUSTER = {
  heartbeatIntervalMs: 1000,
  heartbeatMissedIntervals: 2,
  fenceDelayMs: FAST_WINDOW_MS + 1000,
  selfFenceWindowMs: FAST_WINDOW_MS,
  runnerLeaseMs: 3000,
  failover: { enabled: true, intervalMs: 500 },
};

/** Options of {@link startFencingCluster}. */
export interface FencingClusterOptions {
  readonly etcd: EtcdServer;
  readonly nodes: readonly string[];
  /** The daemon's `cluster` configuration. */
  readonly cluster: object;
  /** Generated domains per node (`--sim-vms`; odd positions are HA). */
  readonly vmsPerNode?: number;
  /** The environment of the node's agent, on every start (DEBVISOR_AGENT_*). */
  readonly agentEnv?: (node: string) => NodeJS.ProcessEnv;
}

/** Starts the daemon, enrolls and starts one agent per node, and waits for their Welcome. */
export async function startFencingCluster(options: FencingClusterOptions): Promise<FencingCluster> {
  const { etcd } = options;
  const dir = mkdtempSync(join(tmpdir(), "dv-fencing-"));
  const prefix = `/fencing-${process.pid}-${Math.random().toString(36).slice(2, 8)}/`;
  const config = join(dir, "rpcd.yaml");
  writeFileSync(
    config,
    JSON.stringify({
      simulation: { enabled: false },
      store: { backend: "etcd", endpoints: [etcd.endpoint], prefix },
      cluster: options.cluster,
    }),
  );
  const argsOn = (port: number) => [
    "--dev",
    "--data-dir",
    dir,
    "--listen",
    `127.0.0.1:${port}`,
    "--metrics-listen",
    "127.0.0.1:0",
    "--config",
    config,
  ];
  // Restarts keep the first start's port: the agents dial it.
  let daemonArgs: string[] = [];
  let daemon = await onFreePort((port) => {
    daemonArgs = argsOn(port);
    return startDaemonProcess(daemonArgs);
  });
  const store = createEtcdStore({ endpoints: [etcd.endpoint], prefix });
  const ops = createAgentOperations(store, systemClock);
  const agents = new Map<string, AgentProcess>();
  const shared = join(dir, "shared-storage");
  const hvctl = (...args: string[]) => hvctlInProcess(join(dir, "hvctl.yaml"), ...args);
  const cluster: FencingCluster = {
    dir,
    store,
    ops,
    agents,
    daemon: () => daemon,
    hvctl,
    run(node) {
      // Reconnect quickly: the tests measure the daemon's absence, not the backoff.
      const agentConfig = join(dir, `${node}-agent.yaml`);
      writeFileSync(agentConfig, JSON.stringify({ reconnect: { initialMs: 100, maxMs: 500 } }));
      const a = startAgent(
        [
          "--config",
          agentConfig,
          "--dir",
          join(dir, node),
          "--server",
          daemon.grpcAddress,
          "--driver",
          "sim",
          "--sim-vms",
          String(options.vmsPerNode ?? 3),
          "--sim-shared-dir",
          shared,
        ],
        options.agentEnv?.(node),
      );
      agents.set(node, a);
      return a;
    },
    async domains(node) {
      const status = await agentStatus(join(dir, node), {
        sharedDir: shared,
        env: options.agentEnv?.(node),
      });
      const states: Record<string, string> = {};
      for (const d of status.domains) states[d.id] = d.state;
      return states;
    },
    actions(node) {
      const f = join(dir, node, "sim-actions.log");
      if (!existsSync(f)) return [];
      return readFileSync(f, "utf8")
        .trim()
        .split("\n")
        .filter(Boolean)
        .map((l) => l.split(" ").slice(1).join(" "));
    },
    submit(node, id, kind, vmId, generation, params = {}) {
      return ops.submit(node, { operationId: id, kind, vmId, params, generation }, "test:fencing");
    },
    waitDone(node, id, timeoutMs = 20_000) {
      return eventually(
        async () => {
          const r = await ops.get(node, id);
          assert.equal(r?.phase, OperationPhase.DONE, `${node}/${id} not done`);
          return r as OperationRecord;
        },
        { timeoutMs, intervalMs: 100 },
      );
    },
    async stopDaemon() {
      daemon.proc.kill("SIGCONT");
      daemon.proc.kill("SIGKILL");
      await daemon.exited;
    },
    async startDaemon() {
      daemon = await startDaemonProcess(daemonArgs);
    },
    async close() {
      for (const a of agents.values()) {
        a.proc.kill("SIGCONT");
        a.proc.kill("SIGKILL");
      }
      daemon.proc.kill("SIGCONT");
      daemon.kill();
      await store.close();
    },
  };
  for (const node of options.nodes) await enrollAgent(hvctl, daemon.grpcAddress, dir, node);
  for (const node of options.nodes) cluster.run(node);
  for (const node of options.nodes) await agents.get(node)?.waitLog("self-fence window set");
  return cluster;
}
