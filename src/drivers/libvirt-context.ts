// What every part of the libvirt driver shares: the validated settings, the
// logger and the node's virsh invoker.

import { ID_HINT, ID_PATTERN, type Logger, silentLogger } from "../core/index.js";
import { runCommand } from "./command-runner.js";
import type { DriverCapabilities } from "./hypervisor-driver.js";
import type { LibvirtDriverOptions } from "./libvirt-driver.js";
import { isLibvirtUri } from "./libvirt-identifiers.js";
import type { RbdFencing } from "./rbd-fencing.js";
import type { VirshInvoker } from "./virsh-invoker.js";

/** The driver's options, validated and fully defaulted. */
export type LibvirtSettings = Required<
  Omit<LibvirtDriverOptions, "capabilities" | "rbdFencing">
> & {
  readonly capabilities: DriverCapabilities;
};

/** The state the driver's parts share, built once by createLibvirtDriver. */
export interface LibvirtContext {
  readonly s: LibvirtSettings;
  /** The settings' logger, for this driver and node. */
  readonly log: Logger;
  /** Runs virsh; see {@link VirshInvoker.run}. */
  readonly virsh: VirshInvoker["run"];
  readonly parsed: VirshInvoker["parsed"];
  /** Storage fencing of the domains' RBD disks, when given. */
  readonly rbdFencing?: RbdFencing;
}

function positive(value: number | undefined, fallback: number, name: string): number {
  const v = value ?? fallback;
  if (!Number.isInteger(v) || v <= 0) throw new TypeError(`${name} must be a positive integer`);
  return v;
}

/** Validates options once into a frozen, fully defaulted object. */
export function settleLibvirtOptions(options: LibvirtDriverOptions): LibvirtSettings {
  if (!ID_PATTERN.test(options.nodeId)) throw new TypeError(`nodeId must be ${ID_HINT}`);
  if (!isLibvirtUri(options.uri)) throw new TypeError("uri must be a libvirt connection URI");
  const virsh = options.virsh ?? "virsh";
  if (virsh === "" || virsh.startsWith("-")) throw new TypeError("virsh must be a program path");
  const migrates = !options.uri.startsWith("test:");
  return Object.freeze({
    nodeId: options.nodeId,
    uri: options.uri,
    virsh,
    timeoutMs: positive(options.timeoutMs, 30_000, "timeoutMs"),
    migrateTimeoutMs: positive(options.migrateTimeoutMs, 30 * 60_000, "migrateTimeoutMs"),
    shutdownTimeoutMs: positive(options.shutdownTimeoutMs, 120_000, "shutdownTimeoutMs"),
    pollIntervalMs: positive(options.pollIntervalMs, 1000, "pollIntervalMs"),
    abortGraceMs: positive(options.abortGraceMs, 10_000, "abortGraceMs"),
    peerToPeer: options.peerToPeer ?? false,
    capabilities: Object.freeze({
      ...(options.capabilities ?? { liveMigration: migrates, offlineMigration: migrates }),
    }),
    runner: options.runner ?? runCommand,
    logger: options.logger ?? silentLogger,
  });
}
