// The drivers layer: the hypervisor and storage backends the cluster layer
// drives. The in-process simulation, and storage over the zfs and rbd
// command lines. libvirt follows.

export type {
  CommandExit,
  CommandOutput,
  CommandRunner,
  CommandSpec,
  RunningCommand,
} from "./command-runner.js";
export { createLocalRunner, runCommand } from "./command-runner.js";
export type { RbdDriverOptions } from "./rbd-driver.js";
export { createRbdDriver } from "./rbd-driver.js";
export type {
  SimulatedDataset,
  SimulatedStorage,
  SimulatedStorageOptions,
  StorageFault,
  StorageOp,
} from "./simulated-storage.js";
export { createSimulatedStorage } from "./simulated-storage.js";
export type { Simulation, SimulationOptions } from "./simulation.js";
export { createSimulation } from "./simulation.js";
export type {
  RbdCloneDriver,
  SendOptions,
  SendResult,
  SnapshotDriver,
  SnapshotTarget,
  StorageDriver,
  ZfsReplicationDriver,
} from "./storage-driver.js";
export { canClone, canReplicate, canSnapshot, datasetKey } from "./storage-driver.js";
export {
  backendName,
  checkLabel,
  labelOf,
  snapshotLabels,
  snapshotSpec,
  stampedSnapshotName,
} from "./storage-names.js";
export type { StorageBackends } from "./storage-router.js";
export { createStorageRouter } from "./storage-router.js";
export type { ZfsDriverOptions } from "./zfs-driver.js";
export { createZfsDriver } from "./zfs-driver.js";
