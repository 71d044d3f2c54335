/**
 * The host's boot as the agent last saw it, kept in its directory: the
 * boot id and the HA VMs running then. A host that rebooted since (a
 * hardware watchdog, a kernel panic, an operator's reboot) stopped those
 * VMs while no agent ran; they are told to the control plane as
 * self-fenced, as a simulated watchdog reset's are: else nothing brings
 * them back when the node is READY again before any controller saw it
 * NOT_READY past the fence delay. The HA VMs the agent stopped itself
 * (self-fenced) are kept with them until taken over, for the same reason:
 * an agent started again before it reconnected forgot them. Part of
 * `runAgent`.
 */
import { join } from "node:path";
import type { Logger } from "../core/index.js";
import {
  bootId,
  type DomainStatus,
  readFileIfPresent,
  writeFileDurably,
} from "../drivers/index.js";

/** The file in the agent's directory. */
export const HOST_BOOT_FILE = "host-boot.json";

/** At most this many HA VM ids are kept (a node runs far fewer); the rest are left out, logged. */
export const MAX_KEPT_HA_VMS = 1024;

/** What {@link bootId} says where the host has no boot id: no reboot is ever seen. */
const UNKNOWN_BOOT = "unknown-boot";

/** The agent's log line when it tells the HA VMs a reboot stopped. */
export const REBOOT_TOLD =
  "the host rebooted since the agent last ran; its HA vms are to run again";

/** The agent's log line when, started again on the same boot, it tells the HA VMs it stopped. */
export const FENCED_TOLD_AGAIN =
  "HA vms this node stopped, not yet taken over by the control plane; told again";

/** The host's boot, the last one the agent saw, and the HA VMs running in it. */
export interface HostBoot {
  /**
   * The HA VMs the agent last saw running, when the host booted since; on
   * any boot, those a reboot stopped, or the node stopped on its own, that
   * were told and not yet taken over (an agent restarted, or a host rebooted
   * again, before the control plane heard). Empty on a first start, or when
   * the file was unreadable.
   */
  readonly ranBeforeReboot: readonly string[];
  /** The HA VMs running now: kept, with this boot's id, when they differ from those kept. */
  sawRunning(haVmIds: readonly string[]): void;
  /** Whether the host booted since the file was written (false on a first start). */
  readonly rebooted: boolean;
  /** The HA VMs a reboot stopped, told now: kept (replacing those kept) until each is taken over. */
  told(haVmIds: readonly string[]): void;
  /**
   * An HA VM this node stopped on its own (self-fenced, or a watchdog reset's): kept with
   * those a reboot stopped until taken over, so that an agent started again before the
   * control plane heard still tells it.
   */
  fenced(vmId: string): void;
  /** An operation on `vmId` came: the control plane took it over; no longer kept to be told. */
  taken(vmId: string): void;
}

interface HostBootFile {
  bootId: string;
  haRunning: string[];
  /** Told as stopped by a reboot, not yet taken over; absent when none. */
  toTell?: string[];
}

/**
 * Reads the kept boot of the agent directory `dir` and compares it with
 * the host's now (`bootIdFile`). A missing file tells nothing (a first
 * start); an unreadable one neither, logged, and it is written anew at the
 * next inventory. Writes replace the file whole (temporary file, fsync,
 * rename), only when the set of HA VMs running, or of those to tell,
 * changes. The first inventory after a reboot sees the told VMs stopped:
 * they stay kept apart (`toTell`) until taken over, else an agent that
 * starts again before the control plane heard tells them never again.
 */
export function openHostBoot(dir: string, bootIdFile: string, log: Logger): HostBoot {
  const path = join(dir, HOST_BOOT_FILE);
  const boot = bootId(bootIdFile);
  const kept = read(path, log);
  /** The set the file holds for this boot; undefined: the file is to be written. */
  let written: readonly string[] | undefined = kept?.bootId === boot ? kept.haRunning : undefined;
  let toTell: readonly string[] = kept?.toTell ?? [];
  /** A change of `toTell` not written yet (the write failed). */
  let unwritten = false;
  const write = (haRunning: readonly string[]) => {
    try {
      writeFileDurably(
        path,
        `${JSON.stringify({
          bootId: boot,
          haRunning: [...haRunning],
          ...(toTell.length > 0 ? { toTell: [...toTell] } : {}),
        } satisfies HostBootFile)}\n`,
      );
      written = haRunning;
      unwritten = false;
    } catch (err) {
      unwritten = true;
      log.error({ err, path }, "the HA vms running not kept; written again at the next report");
    }
  };
  return {
    ranBeforeReboot:
      kept === undefined || boot === UNKNOWN_BOOT
        ? []
        : kept.bootId !== boot
          ? [...new Set([...kept.haRunning, ...kept.toTell])]
          : kept.toTell,
    rebooted: kept !== undefined && boot !== UNKNOWN_BOOT && kept.bootId !== boot,
    sawRunning(haVmIds) {
      if (boot === UNKNOWN_BOOT) return;
      const all = [...new Set(haVmIds)].sort();
      const next = all.slice(0, MAX_KEPT_HA_VMS);
      if (written !== undefined && sameIds(next, written) && !unwritten) return;
      if (all.length > next.length)
        log.warn(
          { path, kept: next.length, running: all.length },
          "too many HA vms to keep; some left out",
        );
      write(next);
    },
    told(haVmIds) {
      if (boot === UNKNOWN_BOOT) return;
      const next = [...new Set(haVmIds)].sort().slice(0, MAX_KEPT_HA_VMS);
      if (written !== undefined && sameIds(next, toTell) && !unwritten) return;
      toTell = next;
      write(written ?? []);
    },
    fenced(vmId) {
      if (boot === UNKNOWN_BOOT || toTell.includes(vmId)) return;
      if (toTell.length >= MAX_KEPT_HA_VMS) {
        log.warn({ path, vm: vmId, kept: toTell.length }, "too many HA vms to keep; one left out");
        return;
      }
      toTell = [...toTell, vmId].sort();
      write(written ?? []);
    },
    taken(vmId) {
      if (boot === UNKNOWN_BOOT || !toTell.includes(vmId)) return;
      toTell = toTell.filter((id) => id !== vmId);
      write(written ?? []);
    },
  };
}

/**
 * The HA VMs of `boot` that ran before the reboot and are defined here but
 * neither running nor paused now (`domains`: the hypervisor's, after it
 * applied what happened meanwhile); logged when there are any. A VM stopped
 * on purpose before the reboot was not running then, so it is not among them.
 */
export async function stoppedByReboot(
  boot: HostBoot,
  domains: (signal: AbortSignal) => Promise<DomainStatus[]>,
  log: Logger,
  nodeId: string,
): Promise<string[]> {
  if (boot.ranBeforeReboot.length === 0) return [];
  const now = new Map((await domains(AbortSignal.timeout(30_000))).map((d) => [d.id, d.state]));
  const stopped = boot.ranBeforeReboot.filter((id) => {
    const state = now.get(id);
    return state !== undefined && state !== "running" && state !== "paused";
  });
  if (stopped.length > 0)
    log.warn({ node: nodeId, vms: stopped }, boot.rebooted ? REBOOT_TOLD : FENCED_TOLD_AGAIN);
  return stopped;
}

function sameIds(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((id, i) => id === b[i]);
}

function read(path: string, log: Logger): Required<HostBootFile> | undefined {
  try {
    const text = readFileIfPresent(path);
    if (text === undefined) return undefined;
    const doc = JSON.parse(text) as Partial<HostBootFile>;
    if (typeof doc.bootId !== "string" || !Array.isArray(doc.haRunning))
      throw new Error("no bootId or haRunning");
    const ids = (list: unknown[]) =>
      list.filter((id): id is string => typeof id === "string").slice(0, MAX_KEPT_HA_VMS);
    return {
      bootId: doc.bootId,
      haRunning: ids(doc.haRunning),
      toTell: Array.isArray(doc.toTell) ? ids(doc.toTell) : [],
    };
  } catch (err) {
    log.error(
      { err, path },
      "the kept host boot is unreadable; telling no reboot, writing it anew",
    );
    return undefined;
  }
}
