// The operations that move a VM's running copy between nodes after a
// failure: RECOVER brings a failed node's VM up here, REMOVE_STALE_COPY
// takes away a copy left here under an older generation.

import { type Logger, RpcError, toRpcError } from "../core/index.js";
import type { OperationDispatch } from "../gen/debvisor/v1/agent_pb.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import type { CopyGenerations } from "./copy-generations.js";
import {
  canDefine,
  canRecover,
  canTellDiskHolder,
  type HypervisorDriver,
} from "./hypervisor-driver.js";
import { vmFromDefinitionParams } from "./operation-params.js";

/** What the failover actions use: the executor's options, passed once. */
export interface FailoverDeps {
  readonly driver: HypervisorDriver;
  /** Defines a VM from the control plane's view, where the backend can (RECOVER). */
  readonly define?: (info: VmInfo) => void;
  /** The generation each copy here was started under (REMOVE_STALE_COPY compares with it). */
  readonly copies?: CopyGenerations;
  readonly logger: Logger;
}

/**
 * Failover: starts here a VM of a failed node. Its definition is here
 * already (shared or replicated storage), or defined from the control
 * plane's view where the backend can. The generation it was decided
 * under is in the journal with the dispatch (the fencing work checks it).
 */
/**
 * Brings up a failed node's VM here, under the operation's generation:
 * started when defined here; else recovered from the shared storage's
 * definition where the driver can; else defined from the control plane's
 * description where the backend can, then started.
 */
export async function recoverHere(
  deps: FailoverDeps,
  d: OperationDispatch,
  signal: AbortSignal,
): Promise<void> {
  const { driver, logger } = deps;
  const fence = { generation: d.generation };
  logger.info(
    { vm: d.vmId, from: d.params.from, generation: String(d.generation) },
    "recovering a vm of a failed node",
  );
  if ((await driver.info(d.vmId, signal)) !== undefined) return driver.start(d.vmId, signal, fence);
  const info = vmFromDefinitionParams(d.vmId, d.params);
  if (canRecover(driver))
    try {
      return await driver.recover(d.vmId, d.params.from ?? "", signal, fence);
    } catch (err) {
      // No definition on the shared storage: defined from the control plane's view below.
      if (info === undefined || toRpcError(err).reason !== "VM_NOT_FOUND") throw err;
    }
  if (info === undefined || deps.define === undefined)
    throw new RpcError("VM_NOT_FOUND", {
      message: `vm ${d.vmId} is not defined on this node`,
    });
  deps.define(info);
  await driver.start(d.vmId, signal, fence);
}

/**
 * Conflicts: stops (hard) and undefines this node's copy of a VM placed
 * elsewhere, only if the copy runs under a generation older than the VM's
 * current one, which the dispatch carries; the current copy, or one
 * started after the removal was decided, is never touched.
 */
export async function removeStaleCopy(
  deps: FailoverDeps,
  d: OperationDispatch,
  signal: AbortSignal,
): Promise<void> {
  const { driver, logger } = deps;
  const mine = deps.copies?.of(d.vmId) ?? 0n;
  if (d.generation === 0n || mine >= d.generation)
    throw new RpcError("COPY_NOT_STALE", {
      message: `the copy here runs under generation ${mine}, not older than ${d.generation}; not removed`,
    });
  const here = await driver.info(d.vmId, signal);
  if (here === undefined) return;
  // A copy that holds its disks is where the VM is, if no start elsewhere took them since:
  // kept when it runs, or when it is not the copy started here (no generation recorded
  // here, or its locks taken under a newer one than recorded: it migrated in, maybe onto
  // an older copy of its own, and a removal decided before the migration landed after
  // it). A stopped copy started here under an older generation goes, freeing the disks.
  const held = canTellDiskHolder(driver) ? await driver.heldDisks(d.vmId, signal) : undefined;
  if (held !== undefined && (here.state !== "stopped" || mine === 0n || held.generation > mine))
    throw new RpcError("COPY_NOT_STALE", {
      message: "the copy here holds its disks' locks; not removed",
    });
  if (here.state !== "stopped") await driver.stop(d.vmId, { force: true, signal });
  if (canDefine(driver))
    await driver.undefine(d.vmId, { force: true, signal, generation: d.generation });
  deps.copies?.forget(d.vmId);
  logger.info(
    { vm: d.vmId, copyGeneration: String(mine), generation: String(d.generation) },
    "stale copy removed",
  );
}
