/**
 * The libvirt driver: one node's hypervisor reached through `virsh -c URI`.
 *
 * Every call validates its identifiers first (refused input runs nothing),
 * then runs virsh with an argument array under `LC_ALL=C`, a timeout and the
 * caller's AbortSignal. Domains are always named with `--domain NAME`, never
 * positionally. Failures map to catalogue reasons by exit status and stderr;
 * the command line and stderr go only into the error's `cause`, for logs.
 *
 * Migration runs `virsh migrate --verbose` and turns its `Migration: [ 45 %]`
 * stderr lines (plus `domjobinfo` figures when the backend has them) into
 * progress reports. Aborting a migration interrupts virsh (SIGINT: virsh
 * aborts the job itself, SIGKILL after a grace) and runs `virsh domjobabort`,
 * so libvirt rolls back and the domain keeps running on this node.
 *
 * `haFlag` reads the HA flag `define` writes into DebVisor's metadata
 * namespace (`virsh metadata`), for the node agent's self-fencing.
 *
 * With `rbdFencing`, a cold start under a placement generation first takes
 * the lock of each RBD disk in the domain's XML for that generation
 * (STALE_GENERATION, nothing started, when a newer one holds it).
 *
 * By default each call is its own virsh process (its own connection); pass a
 * `runner` from {@link createVirshSession} to keep one connection instead.
 *
 * The parts: libvirt-context.ts (settings and what the parts share),
 * libvirt-queries.ts, libvirt-power.ts, libvirt-definition.ts and
 * libvirt-migration.ts.
 */

import { type Logger, throwIfAborted } from "../core/index.js";
import type { CommandRunner } from "./command-runner.js";
import type {
  DefiningDriver,
  DriverCapabilities,
  HaFlagDriver,
  JobAbortingDriver,
} from "./hypervisor-driver.js";
import { type LibvirtContext, settleLibvirtOptions } from "./libvirt-context.js";
import { createLibvirtDefinition } from "./libvirt-definition.js";
import { checkVmId } from "./libvirt-identifiers.js";
import { createLibvirtMigration } from "./libvirt-migration.js";
import { createLibvirtPower } from "./libvirt-power.js";
import { createLibvirtQueries } from "./libvirt-queries.js";
import type { RbdFencing } from "./rbd-fencing.js";
import { createVirshInvoker } from "./virsh-invoker.js";

/** Options of {@link createLibvirtDriver}. */
export interface LibvirtDriverOptions {
  /** The node this driver drives (the id rule of the API). */
  readonly nodeId: string;
  /** The node's libvirt connection URI, for example `qemu:///system` or `test:///default`. */
  readonly uri: string;
  /** The virsh program (default `virsh`, found on PATH). */
  readonly virsh?: string;
  /** Limit of one ordinary command (default 30 s). */
  readonly timeoutMs?: number;
  /** Limit of one migration (default 30 min); past it the job is aborted. */
  readonly migrateTimeoutMs?: number;
  /** How long a graceful stop waits for the guest to power off (default 120 s). */
  readonly shutdownTimeoutMs?: number;
  /** Interval of state polls while a graceful stop waits (default 1 s). */
  readonly pollIntervalMs?: number;
  /** How long an interrupted migrating virsh gets before SIGKILL (default 10 s). */
  readonly abortGraceMs?: number;
  /**
   * What the backend can do. Default: nothing for `test:` URIs (libvirt's
   * test driver cannot migrate), live and offline migration otherwise.
   */
  readonly capabilities?: DriverCapabilities;
  /**
   * Migrate peer to peer (`--p2p`): this node's libvirtd connects to the
   * destination itself. What a node agent does, since its virsh talks only
   * to the local hypervisor (default false: the client connects to both).
   */
  readonly peerToPeer?: boolean;
  /** Runs virsh (default: a process per call); tests replay recorded output through it. */
  readonly runner?: CommandRunner;
  /** Where warnings go (domains whose names the driver cannot address). */
  readonly logger?: Logger;
  /**
   * Storage fencing of the domains' RBD disks: a start under a placement
   * generation first takes each RBD image's lock for that generation
   * ({@link RbdFencing.takeOver}). Absent: RBD disks are not fenced.
   */
  readonly rbdFencing?: RbdFencing;
}

/** Creates the driver of one libvirt node. Throws TypeError on bad options. */
export function createLibvirtDriver(
  options: LibvirtDriverOptions,
): DefiningDriver & JobAbortingDriver & HaFlagDriver {
  const s = settleLibvirtOptions(options);
  const log = s.logger.child({ driver: "libvirt", nodeId: s.nodeId });
  const { run: virsh, parsed } = createVirshInvoker(s);
  const ctx: LibvirtContext = { s, log, virsh, parsed, rbdFencing: options.rbdFencing };
  const { domstate, info, list, haFlag } = createLibvirtQueries(ctx);
  const { start, stop } = createLibvirtPower(ctx, domstate);
  const { define, undefine } = createLibvirtDefinition(ctx, { domstate, info }, stop);
  const { migrate, abortJob } = createLibvirtMigration(ctx, domstate);

  return Object.freeze({
    kind: "libvirt",
    nodeId: s.nodeId,
    capabilities: s.capabilities,
    list,
    info,
    haFlag,
    start,
    stop,
    migrate,
    define,
    undefine,
    async abortJob(vmId: string, signal: AbortSignal) {
      checkVmId(vmId);
      throwIfAborted(signal);
      await abortJob(vmId);
    },
  });
}
