// A local simulation's failover abilities over the shared storage:
// recovering another node's VM here from its stored definition, and telling
// whether this node holds its copy's disks.

import { RpcError } from "../core/index.js";
import { abortableSleep } from "./abortable-sleep.js";
import type { DiskHoldingDriver, RecoveringDriver } from "./hypervisor-driver.js";
import type { LocalSimContext } from "./local-simulation-context.js";
import { lockNamesOf } from "./simulated-disk-locks.js";

/** The recover and heldDisks of a local simulation with a shared storage. */
export type LocalRecovery = Pick<RecoveringDriver, "recover"> &
  Pick<DiskHoldingDriver, "heldDisks">;

/** Creates them; `adopt` takes in handed-over domains first. */
export function createLocalRecovery(ctx: LocalSimContext, adopt: () => void): LocalRecovery {
  const { world, locks, nodeId, fencing, actionMs, note, startHere } = ctx;
  /** Defines a VM of another node here from the shared storage's definition, and starts it. */
  const recover: RecoveringDriver["recover"] = async (vmId, fromNodeId, signal, recoverOptions) => {
    if (locks === undefined) throw new RpcError("BACKEND_UNAVAILABLE");
    adopt();
    fencing.check();
    if (actionMs > 0) await abortableSleep(actionMs, signal);
    fencing.check();
    const definition = locks.definition(vmId);
    if (definition === undefined) throw new RpcError("VM_NOT_FOUND");
    startHere(vmId, recoverOptions?.generation ?? 0n, () => {
      const here = world.vms.get(vmId);
      if (here?.node === nodeId) return;
      world.vms.set(vmId, { info: definition, node: nodeId, state: "stopped" });
    });
    note(`recover-from-${fromNodeId}`, vmId);
  };
  /** Whether this node holds every lock of its copy's disks (none held elsewhere, none free), and under which generation. */
  const heldDisks: DiskHoldingDriver["heldDisks"] = async (vmId) => {
    const vm = world.vms.get(vmId);
    if (locks === undefined || vm === undefined || vm.node !== nodeId) return undefined;
    let generation = 0n;
    for (const disk of lockNamesOf(vm.info)) {
      const lock = locks.lock(disk);
      if (lock?.owner !== nodeId) return undefined;
      if (lock.generation > generation) generation = lock.generation;
    }
    return { generation };
  };
  return { recover, heldDisks };
}
