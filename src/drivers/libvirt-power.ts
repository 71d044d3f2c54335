// Starting and stopping libvirt domains: a cold start fences the domain's
// RBD disks first; a graceful stop waits, polling, until the guest is off.

import { create } from "@bufbuild/protobuf";
import { RpcError, throwIfAborted } from "../core/index.js";
import { DatasetRefSchema, StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import { abortableSleep } from "./abortable-sleep.js";
import type { DomainState, StartOptions } from "./hypervisor-driver.js";
import type { LibvirtContext } from "./libvirt-context.js";
import { checkVmId } from "./libvirt-identifiers.js";
import type { LibvirtQueries } from "./libvirt-queries.js";
import { isRace, virshSaid } from "./virsh-invoker.js";
import { lostMidCall, parseRbdDiskSources } from "./virsh-parse.js";

/** The libvirt driver's start and stop. */
export interface LibvirtPower {
  /** Starts (or resumes) a domain; one running already is left as it is. */
  start(vmId: string, signal: AbortSignal, opts?: StartOptions): Promise<void>;
  /** `destroy` (forced) or `shutdown`, then waits until the domain is off (BACKEND_TIMEOUT past the limit). */
  stop(vmId: string, options: { force: boolean; signal: AbortSignal }): Promise<void>;
}

/** Creates start and stop over the node's virsh. */
export function createLibvirtPower(
  ctx: LibvirtContext,
  domstate: LibvirtQueries["domstate"],
): LibvirtPower {
  const { s, log, virsh, parsed } = ctx;

  /**
   * Takes the lock of each RBD disk of `vmId` for `generation` (blocklisting
   * the clients of an older holder first); STALE_GENERATION when a disk is
   * held under this generation or a newer one elsewhere. Runs no rbd
   * command for a domain without RBD disks.
   */
  async function fenceRbdDisks(vmId: string, generation: bigint, signal: AbortSignal) {
    const fencing = ctx.rbdFencing;
    if (fencing === undefined || generation <= 0n) return;
    const args = ["dumpxml", "--domain", vmId];
    const disks = parsed(args, await virsh(args, signal), parseRbdDiskSources);
    for (const d of disks) {
      const image = create(DatasetRefSchema, { backend: StorageBackend.BACKEND_RBD, ...d });
      const { blocklisted } = await fencing.takeOver(image, s.nodeId, generation, signal);
      if (blocklisted.length > 0)
        log.warn(
          { vm: vmId, image: `${d.pool}/${d.name}`, generation: String(generation), blocklisted },
          "blocklisted the previous clients of an rbd disk before starting",
        );
    }
  }

  return {
    async start(vmId, signal, opts) {
      checkVmId(vmId);
      throwIfAborted(signal);
      const state = await domstate(vmId, signal);
      if (state === "running") return;
      // A paused domain here already has its disks open: only a cold start takes them over.
      if (state === "stopped") await fenceRbdDisks(vmId, opts?.generation ?? 0n, signal);
      try {
        await virsh([state === "paused" ? "resume" : "start", "--domain", vmId], signal);
      } catch (e) {
        // Started by someone else in between: the wanted state holds.
        if (isRace(e, /already (active|running)/i)) return;
        // Cut off after the start was sent, the domain may be running: not BACKEND_UNAVAILABLE,
        // which says nothing was done (the HA restore asks again without telling it).
        if (virshSaid(e, "BACKEND_UNAVAILABLE", lostMidCall))
          throw new RpcError("BACKEND_FAILED", {
            message: `the connection to libvirt was lost while starting ${vmId}; it may have started`,
            cause: e,
          });
        throw e;
      }
    },
    async stop(vmId, options) {
      const { force, signal } = options;
      checkVmId(vmId);
      throwIfAborted(signal);
      if ((await domstate(vmId, signal)) === "stopped") return;
      try {
        await virsh([force ? "destroy" : "shutdown", "--domain", vmId], signal);
      } catch (e) {
        // Stopped by itself or by someone else in between.
        if (!isRace(e, /not running|is not active|domain is not active/i)) throw e;
      }
      // shutdown only asks the guest; wait until it is off (a transient domain vanishes).
      const polls = Math.ceil(s.shutdownTimeoutMs / s.pollIntervalMs);
      for (let i = 0; i <= polls; i++) {
        let state: DomainState;
        try {
          state = await domstate(vmId, signal);
        } catch (e) {
          if (e instanceof RpcError && e.reason === "VM_NOT_FOUND") return;
          throw e;
        }
        if (state === "stopped") return;
        if (i < polls) await abortableSleep(s.pollIntervalMs, signal);
      }
      throw new RpcError("BACKEND_TIMEOUT", {
        cause: new Error(`${vmId} still running ${s.shutdownTimeoutMs} ms after shutdown`),
      });
    },
  };
}
