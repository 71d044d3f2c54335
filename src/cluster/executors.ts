import type { HypervisorDriver, MigrationDestination } from "../drivers/index.js";

/**
 * How the cluster reaches each node's hypervisor. Today every executor is
 * local (a driver this process runs: the simulation, or libvirt over a
 * connection URI); a node agent will be another implementation of the same
 * lookup, returning drivers whose calls travel over the network.
 */
export interface Executors {
  /** The hypervisor of a node, or undefined when this control plane has none for it. */
  forNode(nodeId: string): HypervisorDriver | undefined;
  /** How a source node reaches `nodeId` for a migration. */
  destination(nodeId: string): MigrationDestination;
}

/** Executors over drivers held in this process. */
export function createLocalExecutors(
  drivers: (nodeId: string) => HypervisorDriver | undefined,
  uriOf: (nodeId: string) => string = () => "",
): Executors {
  return {
    forNode: drivers,
    destination: (nodeId) => ({ nodeId, uri: uriOf(nodeId) }),
  };
}
