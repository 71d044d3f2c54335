// The drivers layer: the hypervisor and storage backends the cluster layer
// drives, behind small interfaces (HypervisorDriver, StorageDriver).

export type {
  CommandErrorKind,
  CommandResult,
  CommandRunner,
  RunOptions,
} from "./command-runner.js";
export { CommandError, LineSplitter, runCommand } from "./command-runner.js";
export { vmStateOf } from "./domain-state.js";
export type {
  DomainState,
  DomainStatus,
  DriverCapabilities,
  HypervisorDriver,
  MigrateOptions,
  MigrationDestination,
  MigrationPhase,
  MigrationProgress,
  RecoveringDriver,
} from "./hypervisor-driver.js";
export { canRecover } from "./hypervisor-driver.js";
export type { LibvirtDriverOptions } from "./libvirt-driver.js";
export { createLibvirtDriver } from "./libvirt-driver.js";
export { isDomainName, isLibvirtUri } from "./libvirt-identifiers.js";
export type { Simulation, SimulationOptions } from "./simulation.js";
export { createSimulation } from "./simulation.js";
export type { StorageDriver } from "./storage-driver.js";
export { datasetKey } from "./storage-driver.js";
export { VirshCommandError } from "./virsh-invoker.js";
export type { VirshSession, VirshSessionOptions } from "./virsh-session.js";
export { createVirshSession } from "./virsh-session.js";
