/**
 * What the control plane asks of one node's hypervisor. One instance drives
 * one node (a libvirt connection URI, a simulated node). The cluster layer
 * reaches it through a per-node executor, so a remote executor (a node
 * agent) can later implement the same calls over the network.
 *
 * Every call takes an AbortSignal; aborting a running call stops it as far
 * as the backend allows (an aborted migration is rolled back: the VM keeps
 * running on the source). Failures are `RpcError`s with catalogue reasons:
 * VM_NOT_FOUND, BACKEND_UNAVAILABLE, BACKEND_FAILED, BACKEND_TIMEOUT,
 * MIGRATION_NOT_ALLOWED.
 */

/** Power state of a domain as the backend reports it. */
export type DomainState = "running" | "stopped" | "paused" | "crashed";

/** One VM as the hypervisor of a node sees it. */
export interface DomainStatus {
  readonly id: string;
  readonly state: DomainState;
  readonly vcpus: number;
  readonly memoryBytes: bigint;
  /** False when the domain is transient (gone once it stops). */
  readonly persistent: boolean;
  /**
   * A migration job of the domain is running on this node (as its source):
   * settling an orphaned migration waits for it to end. Undefined when the
   * backend cannot tell.
   */
  readonly migrating?: boolean;
}

/** Phases of a migration as the control plane reports them. */
export type MigrationPhase = "preparing" | "transferring" | "switchover" | "completed";

/** A progress report of a running migration. */
export interface MigrationProgress {
  readonly phase: MigrationPhase;
  /** 0 to 100. */
  readonly percent: number;
  readonly bytesTransferred: bigint;
  /** 0 when the backend does not know. */
  readonly bytesTotal: bigint;
  /** Expected pause of the VM at switchover, when the backend estimates it. */
  readonly downtimeEstimateMs?: number;
}

/** Where a migration goes. */
export interface MigrationDestination {
  readonly nodeId: string;
  /**
   * How the source reaches the destination's hypervisor (a libvirt URI such
   * as `qemu+ssh://hv02/system`); drivers that need none ignore it.
   */
  readonly uri: string;
}

/** Options of {@link HypervisorDriver.migrate}. */
export interface MigrateOptions {
  /** Live (the VM keeps running) or offline (the VM is moved stopped). */
  readonly live: boolean;
  readonly onProgress?: (progress: MigrationProgress) => void;
  readonly signal: AbortSignal;
}

/** What one backend can do, so planning refuses what it cannot. */
export interface DriverCapabilities {
  readonly liveMigration: boolean;
  readonly offlineMigration: boolean;
}

/** Options of a start that may be fenced (start, recover, a migration's arrival). */
export interface StartOptions {
  /**
   * The fencing token: the VM's placement generation the operation was
   * issued under. A driver whose storage enforces it starts the VM only if
   * no node took the VM's disks under a generation at least this high,
   * checked in the same step that starts it (STALE_GENERATION, FENCED);
   * others ignore it. 0 or absent: unfenced (refused only where another
   * node holds the disks).
   */
  readonly generation?: bigint;
}

/** One node's hypervisor. */
export interface HypervisorDriver {
  /** The backend's name for logs and errors: `simulation`, `libvirt`. */
  readonly kind: string;
  readonly nodeId: string;
  readonly capabilities: DriverCapabilities;
  /** Every domain defined on the node, sorted by id. */
  list(signal: AbortSignal): Promise<DomainStatus[]>;
  /** One domain, or undefined when it is not defined on the node. */
  info(vmId: string, signal: AbortSignal): Promise<DomainStatus | undefined>;
  /**
   * Starts a stopped domain; starting a running one is a no-op.
   * BACKEND_UNAVAILABLE only when nothing was started (the backend not
   * reached); a start cut off after it was sent is BACKEND_FAILED.
   */
  start(vmId: string, signal: AbortSignal, options?: StartOptions): Promise<void>;
  /**
   * Stops a domain: a graceful shutdown unless `force` (power off). Stopping
   * a stopped one is a no-op.
   */
  stop(vmId: string, options: { force: boolean; signal: AbortSignal }): Promise<void>;
  /**
   * Moves a domain to another node. Resolves once the domain is defined on
   * the destination and no longer on this node (running there when it ran
   * here and the migration was live; in the state it had otherwise).
   * Rejects, leaving the domain where it was, when it fails or is aborted.
   */
  migrate(vmId: string, to: MigrationDestination, options: MigrateOptions): Promise<void>;
}

/**
 * The optional ability to bring up, on this node, a VM whose node has
 * failed: its definition and disks are on shared or replicated storage.
 */
export interface RecoveringDriver extends HypervisorDriver {
  /**
   * Defines and starts `vmId` here, taking it over from `fromNodeId`. The
   * caller guarantees the failed node has fenced itself.
   */
  recover(
    vmId: string,
    fromNodeId: string,
    signal: AbortSignal,
    options?: StartOptions,
  ): Promise<void>;
}

/** Options of {@link RecoveringDriver.recover}: those of a start (the fencing token). */
export type RecoverOptions = StartOptions;

/**
 * The optional ability of a driver whose node runs jobs on its own (a node
 * agent): waiting until no job on a VM runs there any more and the node
 * has reported its domains since, so that what `info` answers next is the
 * outcome, not a view from before. Settling a migration whose control
 * plane died asks this first: the node may still be moving the VM.
 */
export interface QuiescingDriver extends HypervisorDriver {
  quiesce(vmId: string, signal: AbortSignal): Promise<void>;
}

/** True when `driver` can wait for a node's own jobs on a VM. */
export function canQuiesce(driver: HypervisorDriver): driver is QuiescingDriver {
  return typeof (driver as Partial<QuiescingDriver>).quiesce === "function";
}

/**
 * The optional ability to abort a VM's hypervisor job on this node (libvirt
 * `virsh domjobabort`; a node agent cancels its migration operation): a
 * migration aborted before its switchover is rolled back, the domain stays
 * on the source. Settling a migration whose job does not end in time asks
 * this, then waits for the job to end.
 */
export interface JobAbortingDriver extends HypervisorDriver {
  /** Asks for the VM's running migration job here to be aborted; nothing when none runs here. Resolves once asked. */
  abortJob(vmId: string, signal: AbortSignal): Promise<void>;
}

/**
 * The optional ability to read a domain's HA flag as its definition on the
 * node records it (libvirt: the `ha` of DebVisor's metadata, which
 * `define` writes), for a node agent that must know which VMs it fences.
 */
export interface HaFlagDriver extends HypervisorDriver {
  /**
   * True when the domain's definition says HA; false when it says not, or
   * carries no DebVisor metadata (defined by hand). VM_NOT_FOUND when there
   * is no such domain; other failures as the driver's other reads.
   */
  haFlag(vmId: string, signal: AbortSignal): Promise<boolean>;
}

/** True when `driver` can read its domains' HA flags. */
export function canReadHaFlag(driver: HypervisorDriver): driver is HaFlagDriver {
  return typeof (driver as Partial<HaFlagDriver>).haFlag === "function";
}

/** True when `driver` can abort a VM's hypervisor job. */
export function canAbortJob(driver: HypervisorDriver): driver is JobAbortingDriver {
  return typeof (driver as Partial<JobAbortingDriver>).abortJob === "function";
}

/**
 * The optional ability of a node whose storage records who holds each disk
 * (the simulation's shared storage): whether this node holds every disk
 * lock of its copy of the VM, and under which generation (the highest of
 * its locks'), undefined when it does not hold them all. A copy that holds
 * them is where the disks are: any start elsewhere would have taken them.
 */
export interface DiskHoldingDriver extends HypervisorDriver {
  heldDisks(vmId: string, signal: AbortSignal): Promise<{ generation: bigint } | undefined>;
}

/** True when `driver` can tell whether its node holds a VM's disks. */
export function canTellDiskHolder(driver: HypervisorDriver): driver is DiskHoldingDriver {
  return typeof (driver as Partial<DiskHoldingDriver>).heldDisks === "function";
}

/** True when `driver` can recover VMs of failed nodes. */
export function canRecover(driver: HypervisorDriver): driver is RecoveringDriver {
  return typeof (driver as Partial<RecoveringDriver>).recover === "function";
}

/** One disk of a domain to define: an existing dataset, or a new one of `sizeBytes`. */
export interface DomainDisk {
  readonly backend: "zfs" | "rbd";
  readonly pool: string;
  readonly name: string;
  /** 0: the dataset exists; otherwise it is created with the domain. */
  readonly sizeBytes: bigint;
}

/** What a domain is made of, as the control plane's spec says. */
export interface DomainSpec {
  readonly id: string;
  readonly name: string;
  readonly vcpus: number;
  readonly memoryBytes: bigint;
  readonly disks: readonly DomainDisk[];
  readonly ha: boolean;
  /** A named CPU model, "host-model" or "host-passthrough" ("" : host-model). */
  readonly cpuModel: string;
}

/**
 * The optional ability to define and undefine domains (the VM lifecycle's
 * create and delete). A driver without it can only start, stop and move
 * what is already defined.
 */
export interface DefiningDriver extends HypervisorDriver {
  /**
   * Defines `spec` on this node, stopped, creating its new disks where the
   * backend can. VM_EXISTS when a domain of that id is already defined.
   */
  define(spec: DomainSpec, signal: AbortSignal): Promise<void>;
  /**
   * Undefines a domain. VM_NOT_FOUND when it is not defined here; a running
   * one is VM_RUNNING unless `force` (it is powered off first).
   */
  undefine(
    vmId: string,
    options: {
      force: boolean;
      signal: AbortSignal;
      /**
       * Where the backend holds disk locks, this node's locks of the VM's
       * disks are released, no lower than this generation (0: as held).
       */
      generation?: bigint;
    },
  ): Promise<void>;
}

/** True when `driver` can define and undefine domains. */
export function canDefine(driver: HypervisorDriver): driver is DefiningDriver {
  const d = driver as Partial<DefiningDriver>;
  return typeof d.define === "function" && typeof d.undefine === "function";
}

/**
 * The optional ability of a node that removes a stale copy itself (an
 * agent): only if its copy runs under a generation older than `generation`
 * (the VM's current one); COPY_NOT_STALE otherwise, nothing changed.
 */
export interface StaleCopyRemovingDriver extends HypervisorDriver {
  removeStaleCopy(vmId: string, generation: bigint, signal: AbortSignal): Promise<void>;
}

/** True when `driver` removes stale copies itself. */
export function canRemoveStaleCopy(driver: HypervisorDriver): driver is StaleCopyRemovingDriver {
  return typeof (driver as Partial<StaleCopyRemovingDriver>).removeStaleCopy === "function";
}
