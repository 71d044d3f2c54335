// A local simulation's hypervisor driver: the inner simulated driver, with
// the node's fencing applied before each call, handed-over domains adopted
// first, the configured action delay, disk locks kept in step with the
// domains, and every action noted in the action log.

import { RpcError } from "../core/index.js";
import { abortableSleep } from "./abortable-sleep.js";
import type { DefiningDriver, DomainStatus, MigrateOptions } from "./hypervisor-driver.js";
import type { LocalMigration } from "./local-migration.js";
import type { LocalSimContext } from "./local-simulation-context.js";
import { lockNamesOf } from "./simulated-disk-locks.js";

/** A domain as reported: stopped when fencing says so without writing (observe-only mode). */
const seen = (d: DomainStatus, down: Set<string>): DomainStatus =>
  down.has(d.id) ? { ...d, state: "stopped" } : d;

/** Creates the driver; `adopt` runs before every call, `migrate` is the local migration. */
export function createLocalDomainDriver(
  ctx: LocalSimContext,
  adopt: () => void,
  migrate: LocalMigration,
): DefiningDriver {
  const { inner, nodeId, world, locks, fencing, actionMs, note, startHere } = ctx;
  const withAdopt =
    <A extends unknown[], R>(f: (...a: A) => Promise<R>) =>
    (...a: A): Promise<R> => {
      adopt();
      return f(...a);
    };
  return {
    kind: inner.kind,
    nodeId,
    capabilities: { liveMigration: true, offlineMigration: true },
    list: withAdopt(async (signal: AbortSignal) => {
      const down = fencing.check();
      return (await inner.list(signal)).map((d) => seen(d, down));
    }),
    info: withAdopt(
      async (vmId: string, signal: AbortSignal): Promise<DomainStatus | undefined> => {
        const down = fencing.check();
        const d = await inner.info(vmId, signal);
        return d === undefined ? undefined : seen(d, down);
      },
    ),
    start: withAdopt(
      async (vmId: string, signal: AbortSignal, startOptions?: { generation?: bigint }) => {
        fencing.check();
        if (actionMs > 0) await abortableSleep(actionMs, signal);
        // The token is checked when the domain starts, not when the call arrived.
        fencing.check();
        const d = await inner.info(vmId, signal);
        if (d === undefined) throw new RpcError("VM_NOT_FOUND");
        if (d.state === "running") return;
        startHere(vmId, startOptions?.generation ?? 0n);
        note("start", vmId);
      },
    ),
    stop: withAdopt(async (vmId: string, stopOptions: { force: boolean; signal: AbortSignal }) => {
      fencing.check();
      if (actionMs > 0) await abortableSleep(actionMs, stopOptions.signal);
      await inner.stop(vmId, stopOptions);
      note(stopOptions.force ? "force-stop" : "stop", vmId);
    }),
    migrate: withAdopt((vmId: string, to: { nodeId: string; uri: string }, m: MigrateOptions) =>
      migrate(vmId, to, m),
    ),
    define: withAdopt(
      async (spec: Parameters<DefiningDriver["define"]>[0], signal: AbortSignal) => {
        if (actionMs > 0) await abortableSleep(actionMs, signal);
        await inner.define(spec, signal);
        const defined = world.vms.get(spec.id);
        if (defined !== undefined) locks?.define(defined.info, nodeId);
        note("define", spec.id);
      },
    ),
    undefine: withAdopt(
      async (vmId: string, undefineOptions: Parameters<DefiningDriver["undefine"]>[1]) => {
        if (actionMs > 0) await abortableSleep(actionMs, undefineOptions.signal);
        const info = world.vms.get(vmId)?.info;
        await inner.undefine(vmId, undefineOptions);
        // Its copy gone, the node writes nothing: its locks of the disks are free.
        if (info !== undefined)
          locks?.release(lockNamesOf(info), nodeId, undefineOptions.generation ?? 0n);
        note(undefineOptions.force ? "force-undefine" : "undefine", vmId);
      },
    ),
  };
}
