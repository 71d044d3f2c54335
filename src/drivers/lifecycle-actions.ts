import { RpcError, throwIfAborted } from "../core/index.js";

import { domainSpecFromParams } from "./domain-spec-params.js";
import { canDefine, type HypervisorDriver } from "./hypervisor-driver.js";

/** Reports where a lifecycle action is: percent and phase. */
export type ActionProgress = (percent: number, phase: string) => void;

/** How long a graceful stop waits when the operation does not say (60 s). */
export const DEFAULT_STOP_TIMEOUT_MS = 60_000;

/**
 * Stops a VM the way StopVm promises: a graceful shutdown given
 * `params.timeout_ms` (default 60 s), then powered off; at once with
 * `params.force`. Only the caller's signal cancels it.
 */
export async function stopGracefully(
  driver: HypervisorDriver,
  vmId: string,
  params: Readonly<Record<string, string>>,
  signal: AbortSignal,
  progress: ActionProgress,
): Promise<void> {
  if (params.force === "true") {
    progress(10, "powering off");
    return driver.stop(vmId, { force: true, signal });
  }
  const given = Number(params.timeout_ms ?? "");
  const timeoutMs = Number.isInteger(given) && given > 0 ? given : DEFAULT_STOP_TIMEOUT_MS;
  progress(10, "graceful shutdown");
  const graceful = new AbortController();
  const onAbort = () => graceful.abort(signal.reason);
  signal.addEventListener("abort", onAbort, { once: true });
  const timer = setTimeout(
    () => graceful.abort(new Error("graceful shutdown timed out")),
    timeoutMs,
  );
  try {
    await driver.stop(vmId, { force: false, signal: graceful.signal });
    return;
  } catch (err) {
    throwIfAborted(signal);
    // Past the timeout, or the backend gave up waiting: what StopVm promises is off.
    const timedOut =
      graceful.signal.aborted || (err instanceof RpcError && err.reason === "BACKEND_TIMEOUT");
    if (!timedOut) throw err;
  } finally {
    clearTimeout(timer);
    signal.removeEventListener("abort", onAbort);
  }
  progress(60, "powering off after the graceful timeout");
  await driver.stop(vmId, { force: true, signal });
}

/** CREATE_VM: defines the spec in `params` (starting it with params.start). */
export async function createDomain(
  driver: HypervisorDriver,
  vmId: string,
  params: Readonly<Record<string, string>>,
  signal: AbortSignal,
  progress: ActionProgress,
  fence?: { generation: bigint },
): Promise<void> {
  if (!canDefine(driver)) throw new RpcError("DEFINE_UNSUPPORTED");
  const spec = domainSpecFromParams(vmId, params);
  progress(10, "defining");
  await driver.define(spec, signal);
  if (params.start === "true") {
    progress(60, "starting");
    await driver.start(vmId, signal, fence);
  }
}

/** DELETE_VM: undefines the domain; a running one only with params.force. */
export async function deleteDomain(
  driver: HypervisorDriver,
  vmId: string,
  params: Readonly<Record<string, string>>,
  signal: AbortSignal,
  progress: ActionProgress,
  fence?: { generation: bigint },
): Promise<void> {
  if (!canDefine(driver)) throw new RpcError("DEFINE_UNSUPPORTED");
  progress(10, "undefining");
  // The VM is gone: its disks' locks, freed, keep a generation above the delete's, so no
  // late start of it (a recover under its last generation included) takes them again.
  const generation = fence !== undefined && fence.generation > 0n ? fence.generation + 1n : 0n;
  await driver.undefine(vmId, { force: params.force === "true", signal, generation });
}
