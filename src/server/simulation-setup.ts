import { join } from "node:path";
import { type Inventory, selfFenceWindowMs } from "../cluster/index.js";
import type { Clock, Logger, OpenedResources } from "../core/index.js";
import { createSimulation, type Simulation } from "../drivers/index.js";
import type { Config } from "./config-schema.js";

/** What the in-daemon simulation needs. */
export interface SimulationSetup {
  readonly config: Config;
  readonly inventory: Inventory;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly resources: OpenedResources;
  /** Told the node ids before they are registered (dev mode frees ids another owner holds). */
  readonly beforeRegister?: (nodeIds: readonly string[]) => Promise<void>;
}

/** The simulated cluster, when enabled: its driver and its node ids. */
export interface DaemonSimulation {
  readonly sim: Simulation | undefined;
  readonly simNodeIds: string[];
  /** Sends one simulated node's heartbeat now (after an operation changed it). */
  readonly simBeat?: (nodeId: string) => Promise<void>;
}

/**
 * Starts the simulated cluster when `simulation.enabled` (default: dev mode
 * without dev.agents):
 * registers its nodes, beats their heartbeats every heartbeat interval and
 * schedules the configured faults.
 */
export async function startSimulation(setup: SimulationSetup): Promise<DaemonSimulation> {
  const { config, inventory, clock, logger, resources } = setup;
  if (!(config.simulation.enabled ?? (config.dev.enabled && !config.dev.agents.enabled)))
    return { sim: undefined, simNodeIds: [] };
  const sim = createSimulation({
    ...config.simulation,
    clock,
    // The simulated nodes fence themselves like agents: after the self-fence window.
    fenceDelayMs: selfFenceWindowMs(config.cluster.fenceDelayMs, config.cluster.selfFenceWindowMs),
    stateFile:
      config.simulation.stateFile ??
      (config.dev.enabled ? join(config.dev.dataDir, "simulation.json") : undefined),
  });
  resources.push("simulation", () => sim.close());
  const simNodeIds = sim.nodes.map((n) => n.id?.id ?? "");
  await setup.beforeRegister?.(simNodeIds);
  for (const node of sim.nodes) await inventory.register(node, "simulation");
  // The simulation's VMs belong to the tenants its world says, as if a cluster admin had
  // assigned them (first start only: an assignment made since stays). Reports never do.
  for (const id of simNodeIds)
    await inventory.seedTenants(sim.heartbeat(id)?.vms ?? [], "simulation");
  const beatOne = async (id: string) => {
    const health = sim.heartbeat(id);
    if (health === undefined) return;
    await inventory.heartbeat(health);
    sim.delivered(id);
  };
  const beat = () => Promise.all(simNodeIds.map(beatOne));
  await beat();
  const simTimer = setInterval(() => {
    beat().catch((err: unknown) => logger.warn({ err }, "simulated heartbeats failed"));
  }, config.cluster.heartbeatIntervalMs);
  simTimer.unref();
  resources.push("simulated heartbeats", () => clearInterval(simTimer));
  for (const fault of config.simulation.faults) {
    if (!simNodeIds.includes(fault.node))
      throw new Error(`simulation.faults: no simulated node ${fault.node}`);
    const timer = setTimeout(() => {
      logger.warn({ ...fault }, "simulation: injecting a fault");
      if (fault.kind === "kill") sim.faults.killNode(fault.node);
      else sim.faults.partitionNode(fault.node);
    }, fault.afterMs);
    timer.unref();
    resources.push("simulated fault", () => clearTimeout(timer));
  }
  logger.info({ nodes: sim.nodes.length }, "simulated cluster running");
  return { sim, simNodeIds, simBeat: beatOne };
}
