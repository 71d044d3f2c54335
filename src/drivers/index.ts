// The drivers layer: the hypervisor and storage backends the cluster layer
// drives. Today: the in-process simulation. libvirt, ZFS and Ceph RBD follow.

export type { Simulation, SimulationOptions } from "./simulation.js";
export { createSimulation } from "./simulation.js";
export type { StorageDriver } from "./storage-driver.js";
export { datasetKey } from "./storage-driver.js";
