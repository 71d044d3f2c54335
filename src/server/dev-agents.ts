import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { create } from "@bufbuild/protobuf";
import type { Inventory } from "../cluster/index.js";
import type { Logger } from "../core/index.js";
import { seedNodeWorlds, vmStateOf } from "../drivers/index.js";
import { NodeRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { NodeIdSchema } from "../gen/debvisor/v1/common_pb.js";
import { type VmInfo, VmInfoSchema } from "../gen/debvisor/v1/vm_pb.js";
import { getMessage, type KvStore } from "../store/index.js";
import type { Config } from "./config-schema.js";
import type { DevEnvironment } from "./dev-environment.js";

/** The agent program beside this daemon's. */
const AGENT_BIN = fileURLToPath(new URL("../bin/debvisor-agent.js", import.meta.url));

/** The dev cluster's agent nodes before they run: ids, directories and the VMs they start with. */
export interface DevAgentsPlan {
  readonly nodeIds: readonly string[];
  /** The VMs of a first start (their disks seed the simulated storage). */
  readonly vms: readonly VmInfo[];
  dirOf(nodeId: string): string;
  /** The nodes' shared simulated storage (VM definitions, disk locks with fencing tokens). */
  readonly sharedDir: string;
}

/**
 * Gives each dev node a simulated hypervisor of its own in
 * `dataDir`/nodes/<id> (first start only: later starts keep what the
 * agents did), shaped like the embedded simulation (node-01 with vm-001,
 * ...), and gives its VMs the tenants the generated world says, as a
 * cluster admin would (an assignment made since stays).
 */
export async function planDevAgents(
  config: Config,
  dev: DevEnvironment,
  inventory: Inventory,
  now: number,
): Promise<DevAgentsPlan> {
  const dirOf = (id: string) => join(dev.dataDir, "nodes", id);
  const world = seedNodeWorlds(
    {
      nodes: config.dev.agents.nodes,
      vmsPerNode: config.dev.agents.vmsPerNode,
      seed: config.simulation.seed,
      now,
    },
    dirOf,
  );
  const vms = [...world.vms.values()].map((v) =>
    create(VmInfoSchema, {
      ...v.info,
      nodeId: create(NodeIdSchema, { id: v.node }),
      state: vmStateOf(v.state),
    }),
  );
  await inventory.seedTenants(vms, "dev-mode");
  return {
    nodeIds: [...world.nodes.keys()],
    vms,
    dirOf,
    sharedDir: join(dev.dataDir, "shared-storage"),
  };
}

/**
 * Dev mode only: frees the ids of dev nodes registered by another owner
 * (the embedded simulation of an earlier start, or an agent), so the data
 * directory works with either kind of dev cluster. VM tenants stay.
 */
export async function claimDevNodes(
  store: KvStore,
  inventory: Inventory,
  nodeIds: readonly string[],
  owner: (nodeId: string) => string,
  logger: Logger,
): Promise<void> {
  for (const id of nodeIds) {
    const rec = await getMessage(store, NodeRecordSchema, `nodes/${id}`);
    if (rec === undefined || rec.message.owner === owner(id)) continue;
    const node = await inventory.readNode(id);
    if (node !== undefined && (await inventory.remove(id, node.unchanged)))
      logger.info({ node: id, was: rec.message.owner }, "dev mode: node record handed over");
  }
}

/** The running agents of the dev cluster. */
export interface DevAgents {
  /** Each node's directory and agent process id (0 once it exited). */
  nodes(): { id: string; dir: string; pid: number }[];
  /** Stops every agent (SIGTERM, then SIGKILL after 5 s). */
  stop(): Promise<void>;
}

/**
 * Starts one `debvisor-agent run` per dev node, enrolled already, on the
 * daemon's address. Their log lines go to stdout prefixed with the node
 * (`[node-01] {...}`). Each agent holds a pipe to this process as its
 * stdin and stops when it closes, so even a killed daemon takes its
 * agents with it. An agent that is killed (a fault injected on purpose)
 * stays down until `debvisor-agent fault --dir DIR revive` asks for it.
 */
export function startDevAgents(options: {
  readonly plan: DevAgentsPlan;
  readonly server: string;
  readonly config: Config;
  readonly logger: Logger;
}): DevAgents {
  const { plan, config, logger } = options;
  const procs = new Map<string, ChildProcess>();
  let stopping = false;
  const env = { ...process.env };
  // The agents are not the daemon's service: they must not notify systemd for it.
  delete env.NOTIFY_SOCKET;
  delete env.WATCHDOG_USEC;
  delete env.WATCHDOG_PID;
  const spawnAgent = (id: string) => {
    const args = [
      AGENT_BIN,
      "run",
      "--exit-with-stdin",
      "--dir",
      plan.dirOf(id),
      "--server",
      options.server,
      "--tls-server-name",
      "localhost",
      "--driver",
      "sim",
      "--sim-migration-ms",
      String(config.dev.agents.migrationMs),
      "--sim-shared-dir",
      plan.sharedDir,
      "--log-level",
      config.dev.agents.logLevel,
    ];
    const proc = spawn(process.execPath, args, { env, stdio: ["pipe", "pipe", "pipe"] });
    procs.set(id, proc);
    for (const stream of [proc.stdout, proc.stderr]) prefixLines(stream, `[${id}] `);
    proc.once("exit", (code, signal) => {
      if (stopping) logger.info({ node: id, code, signal }, "dev mode: agent process stopped");
      else logger.warn({ node: id, code, signal }, "dev mode: agent process exited");
    });
  };
  const dead = (id: string) => {
    const p = procs.get(id);
    return p === undefined || p.exitCode !== null || p.signalCode !== null;
  };
  for (const id of plan.nodeIds) spawnAgent(id);
  // `debvisor-agent fault --dir DIR revive` leaves this marker: a dead agent is started again.
  const reviver = setInterval(() => {
    for (const id of plan.nodeIds) {
      const marker = join(plan.dirOf(id), "revive");
      if (stopping || !existsSync(marker)) continue;
      rmSync(marker, { force: true });
      if (!dead(id)) continue;
      logger.warn({ node: id }, "dev mode: reviving the agent");
      spawnAgent(id);
    }
  }, 250);
  reviver.unref();
  logger.info({ nodes: plan.nodeIds }, "dev mode: agent processes started");
  return {
    nodes: () =>
      plan.nodeIds.map((id) => {
        return { id, dir: plan.dirOf(id), pid: dead(id) ? 0 : (procs.get(id)?.pid ?? 0) };
      }),
    async stop() {
      stopping = true;
      clearInterval(reviver);
      await Promise.all(
        [...procs.values()].map(async (p) => {
          if (p.exitCode !== null || p.signalCode !== null) return;
          const exited = new Promise((r) => p.once("exit", r));
          p.kill("SIGTERM");
          const t = setTimeout(() => p.kill("SIGKILL"), 5000);
          await exited;
          clearTimeout(t);
        }),
      );
    },
  };
}

/** Copies a child's output to stdout line by line, each line prefixed. */
function prefixLines(stream: NodeJS.ReadableStream | null, prefix: string): void {
  let buffered = "";
  stream?.on("data", (d: Buffer) => {
    buffered += d.toString();
    for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
      process.stdout.write(`${prefix}${buffered.slice(0, nl)}\n`);
      buffered = buffered.slice(nl + 1);
    }
  });
}
