// The drivers layer: the hypervisor and storage backends the cluster layer
// drives, behind small interfaces (HypervisorDriver, StorageDriver): the
// simulation, libvirt over virsh, ZFS and Ceph RBD over their command lines.

export type {
  CommandErrorKind,
  CommandResult,
  CommandRunner,
  RunOptions,
} from "./command-runner.js";
export { CommandError, LineSplitter, runCommand } from "./command-runner.js";
export { type CopyGenerations, openCopyGenerations } from "./copy-generations.js";
export { domainSpecFromParams, domainSpecParams, MAX_DOMAIN_DISKS } from "./domain-spec-params.js";
export { vmStateOf } from "./domain-state.js";
export { readFileIfPresent, writeFileDurably } from "./durable-file.js";
export type {
  DefiningDriver,
  DomainDisk,
  DomainSpec,
  DomainState,
  DomainStatus,
  DriverCapabilities,
  HaFlagDriver,
  HypervisorDriver,
  JobAbortingDriver,
  MigrateOptions,
  MigrationDestination,
  MigrationPhase,
  MigrationProgress,
  QuiescingDriver,
  RecoveringDriver,
  RecoverOptions,
  StaleCopyRemovingDriver,
  StartOptions,
} from "./hypervisor-driver.js";
export {
  canAbortJob,
  canDefine,
  canQuiesce,
  canReadHaFlag,
  canRecover,
  canRemoveStaleCopy,
} from "./hypervisor-driver.js";
export type { LibvirtDriverOptions } from "./libvirt-driver.js";
export { createLibvirtDriver } from "./libvirt-driver.js";
export { isDomainName, isLibvirtUri } from "./libvirt-identifiers.js";
export { virshMigrateArgs } from "./libvirt-migration.js";
export { DEFAULT_STOP_TIMEOUT_MS } from "./lifecycle-actions.js";
export type { LocalSimulation, LocalSimulationOptions } from "./local-simulation.js";
export { createLocalSimulation } from "./local-simulation.js";
export { migrationUriProblem } from "./migration-uri.js";
export type { OperationExecutor, Send as OperationSend } from "./operation-executor.js";
export { createOperationExecutor, OPERATION_CAPABILITIES } from "./operation-executor.js";
export type { JournalEntry, OperationJournal } from "./operation-journal.js";
export { createMemoryJournal, openOperationJournal } from "./operation-journal.js";
export {
  formatTransfer,
  MIGRATION_URI_LABEL,
  parseTransfer,
  vmDefinitionParams,
  vmFromDefinitionParams,
} from "./operation-params.js";
export type { RbdDriverOptions } from "./rbd-driver.js";
export { createRbdDriver } from "./rbd-driver.js";
export type { RbdFencing, RbdFencingOptions, RbdLocker } from "./rbd-fencing.js";
export {
  createRbdFencing,
  parseRbdLockers,
  parseRbdLockId,
  parseRbdWatchers,
  rbdLockId,
} from "./rbd-fencing.js";
export type { Handoff } from "./sim-handoff.js";
export { seedNodeWorlds, simMigrationUri } from "./sim-handoff.js";
export type { DiskBlock, DiskLock, SimulatedDiskLocks } from "./simulated-disk-locks.js";
export { lockNamesOf, openSimulatedDiskLocks } from "./simulated-disk-locks.js";
export type {
  SimulatedDataset,
  SimulatedStorage,
  SimulatedStorageOptions,
  StorageFault,
  StorageOp,
} from "./simulated-storage.js";
export { createSimulatedStorage } from "./simulated-storage.js";
export type { NodeUsage, UsingDomain } from "./simulated-usage.js";
export { simulatedUsage } from "./simulated-usage.js";
export type { SimulatedWatchdog, WatchdogState } from "./simulated-watchdog.js";
export { BOOT_ID_FILE, bootId, monotonicNs, openSimulatedWatchdog } from "./simulated-watchdog.js";
export { saveWorld } from "./simulated-world.js";
export type { Simulation, SimulationOptions } from "./simulation.js";
export { createSimulation } from "./simulation.js";
export type {
  CommandExit as StorageCommandExit,
  CommandOutput as StorageCommandOutput,
  CommandRunner as StorageCommandRunner,
  CommandSpec as StorageCommandSpec,
  RunningCommand,
} from "./storage-command.js";
export { createLocalRunner, runCommand as runStorageCommand } from "./storage-command.js";
export type {
  RbdCloneDriver,
  RbdImageDriver,
  SendOptions,
  SendResult,
  SnapshotDriver,
  SnapshotStream,
  SnapshotTarget,
  StorageDriver,
  StreamReplicationDriver,
  StreamSendOptions,
  ZfsReplicationDriver,
} from "./storage-driver.js";
export {
  canClone,
  canManageImages,
  canReplicate,
  canSize,
  canSnapshot,
  canStream,
  datasetKey,
} from "./storage-driver.js";
export {
  backendName,
  checkLabel,
  labelOf,
  nextStampedName,
  snapshotLabels,
  snapshotSpec,
  stampedSnapshotName,
} from "./storage-names.js";
export type { StorageParams } from "./storage-params.js";
export { decodeStorageParams, encodeStorageParams, isStorageOperation } from "./storage-params.js";
export type { StorageBackends } from "./storage-router.js";
export { createStorageRouter } from "./storage-router.js";
export type { ThrottleOptions } from "./throttle-stream.js";
export { createThrottle } from "./throttle-stream.js";
export { VirshCommandError } from "./virsh-invoker.js";
export type { VirshSession, VirshSessionOptions } from "./virsh-session.js";
export { createVirshSession } from "./virsh-session.js";
export type { VmLanes } from "./vm-lanes.js";
export { createVmLanes } from "./vm-lanes.js";
export type { ZfsDriverOptions } from "./zfs-driver.js";
export { createZfsDriver } from "./zfs-driver.js";
