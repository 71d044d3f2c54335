/**
 * The host's boot as the agent last saw it, kept in its directory: the
 * boot id and the HA VMs running then. A host that rebooted since (a
 * hardware watchdog, a kernel panic, an operator's reboot) stopped those
 * VMs while no agent ran; they are told to the control plane as
 * self-fenced, as a simulated watchdog reset's are: else nothing brings
 * them back when the node is READY again before any controller saw it
 * NOT_READY past the fence delay. Part of `runAgent`.
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

/** The host's boot, the last one the agent saw, and the HA VMs running in it. */
export interface HostBoot {
  /**
   * The HA VMs the agent last saw running, when the host booted since;
   * empty on the same boot, on a first start, or when the file was unreadable.
   */
  readonly ranBeforeReboot: readonly string[];
  /** The HA VMs running now: kept, with this boot's id, when they differ from those kept. */
  sawRunning(haVmIds: readonly string[]): void;
}

interface HostBootFile {
  bootId: string;
  haRunning: string[];
}

/**
 * Reads the kept boot of the agent directory `dir` and compares it with
 * the host's now (`bootIdFile`). A missing file tells nothing (a first
 * start); an unreadable one neither, logged, and it is written anew at the
 * next inventory. Writes replace the file whole (temporary file, fsync,
 * rename), only when the set of HA VMs running changes.
 */
export function openHostBoot(dir: string, bootIdFile: string, log: Logger): HostBoot {
  const path = join(dir, HOST_BOOT_FILE);
  const boot = bootId(bootIdFile);
  const kept = read(path, log);
  /** The set the file holds for this boot; undefined: the file is to be written. */
  let written = kept?.bootId === boot ? kept.haRunning : undefined;
  return {
    ranBeforeReboot:
      kept !== undefined && boot !== UNKNOWN_BOOT && kept.bootId !== boot ? kept.haRunning : [],
    sawRunning(haVmIds) {
      if (boot === UNKNOWN_BOOT) return;
      const all = [...new Set(haVmIds)].sort();
      const next = all.slice(0, MAX_KEPT_HA_VMS);
      if (written !== undefined && sameIds(next, written)) return;
      if (all.length > next.length)
        log.warn(
          { path, kept: next.length, running: all.length },
          "too many HA vms to keep; some left out",
        );
      try {
        writeFileDurably(
          path,
          `${JSON.stringify({ bootId: boot, haRunning: next } satisfies HostBootFile)}\n`,
        );
        written = next;
      } catch (err) {
        log.error({ err, path }, "the HA vms running not kept; written again at the next report");
      }
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
  if (stopped.length > 0) log.warn({ node: nodeId, vms: stopped }, REBOOT_TOLD);
  return stopped;
}

function sameIds(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((id, i) => id === b[i]);
}

function read(path: string, log: Logger): HostBootFile | undefined {
  try {
    const text = readFileIfPresent(path);
    if (text === undefined) return undefined;
    const doc = JSON.parse(text) as Partial<HostBootFile>;
    if (typeof doc.bootId !== "string" || !Array.isArray(doc.haRunning))
      throw new Error("no bootId or haRunning");
    return {
      bootId: doc.bootId,
      haRunning: doc.haRunning
        .filter((id): id is string => typeof id === "string")
        .slice(0, MAX_KEPT_HA_VMS),
    };
  } catch (err) {
    log.error(
      { err, path },
      "the kept host boot is unreadable; telling no reboot, writing it anew",
    );
    return undefined;
  }
}
