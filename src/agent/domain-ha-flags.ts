/**
 * The HA flags of a node's domains as its agent knows them, for a driver
 * that reads them from the domains' definitions (libvirt: the `ha` of
 * DebVisor's metadata, which `define` writes). Self-fencing, leased starts
 * and the host-boot record ask `isHa` synchronously and often (every fence
 * tick, every report), and a read is a virsh call: so each domain's flag is
 * read once a listing first shows it, set from the spec when `define`
 * writes it, dropped when the domain is undefined or a listing no longer
 * shows it, and read again after {@link HA_FLAG_REFRESH_MS} (an operator's
 * edit of the metadata is seen within that).
 *
 * A read that fails never fails the listing: the domain keeps what was
 * known of it (nothing known: not HA), the failure is logged once, and the
 * next listing reads it again. Nor does one that outlasts the listing's
 * signal: the reads stop there, and the listing is answered with what was
 * known.
 */
import { type Logger, toRpcError } from "../core/index.js";
import { canDefine, type HaFlagDriver, type HypervisorDriver } from "../drivers/index.js";

/** How long a flag read is trusted before a listing reads it again. */
export const HA_FLAG_REFRESH_MS = 10 * 60_000;

/** At most this many domains' flags are kept (a node runs far fewer); others are read at each listing. */
export const MAX_HA_FLAGS = 4096;

/** Flags read at once while listing. */
const READ_CONCURRENCY = 4;

/**
 * How long a listing spends reading flags; those not read by then are read
 * at the next listing. The self-fence lists before it stops anything: a
 * hung read held it for the listing's whole 30 s, longer than the margin
 * between the self-fence window and the fence delay may be configured.
 */
export const HA_FLAG_READS_TIMEOUT_MS = 5000;

/** The flags, and the driver whose listings, defines and undefines keep them. */
export interface DomainHaFlags {
  /** Whether the domain is HA as last read; false when unknown. */
  isHa(vmId: string): boolean;
  readonly driver: HypervisorDriver;
}

interface Flag {
  readonly ha: boolean;
  /** When it was read or set (the clock `now`). */
  readonly at: number;
  /** The order of sets and listing starts: a flag set after a listing began is not dropped by it. */
  readonly seq: number;
  /** False after a failed read (logged): read again at the next listing. */
  readonly ok: boolean;
}

/** Keeps the HA flags of `driver`'s domains, on the wall clock `now` (ms). */
export function trackDomainHaFlags(
  driver: HaFlagDriver,
  log: Logger,
  now: () => number = Date.now,
): DomainHaFlags {
  const flags = new Map<string, Flag>();
  let seq = 0;
  let overflowLogged = false;

  const keep = (vmId: string, flag: Omit<Flag, "seq">) => {
    if (flags.size < MAX_HA_FLAGS || flags.has(vmId)) {
      flags.set(vmId, { ...flag, seq: ++seq });
      return;
    }
    if (!overflowLogged)
      log.warn(
        { max: MAX_HA_FLAGS },
        "too many domains to keep their HA flags; read at each listing",
      );
    overflowLogged = true;
  };

  /** Reads one flag within the listing's `signal`; cut off by `bound`, it counts as failed. */
  async function read(vmId: string, signal: AbortSignal, bound: AbortSignal): Promise<void> {
    try {
      keep(vmId, {
        ha: await driver.haFlag(vmId, AbortSignal.any([signal, bound])),
        at: now(),
        ok: true,
      });
    } catch (err) {
      // Out of the listing's time: the listing stands, with what was known. Failing it, a read
      // that hangs kept the fence check from stopping even the HA VMs it knew.
      if (signal.aborted) return;
      // Undefined between the listing and the read: simply gone.
      if (toRpcError(err).reason === "VM_NOT_FOUND") {
        flags.delete(vmId);
        return;
      }
      const known = flags.get(vmId);
      if (known?.ok !== false)
        log.warn(
          { err, vm: vmId, ha: known?.ha ?? false },
          "could not read a domain's HA flag; keeping what was known, read again at the next listing",
        );
      keep(vmId, { ha: known?.ha ?? false, at: known?.at ?? now(), ok: false });
    }
  }

  const list: HypervisorDriver["list"] = async (signal) => {
    const began = ++seq;
    const t = now();
    const domains = await driver.list(signal);
    const listed = new Set(domains.map((d) => d.id));
    // Set after the listing began (a define meanwhile): kept until a listing that could show it.
    for (const [id, flag] of flags) if (!listed.has(id) && flag.seq < began) flags.delete(id);
    const due = domains
      .map((d) => d.id)
      .filter((id) => {
        const flag = flags.get(id);
        return flag === undefined || !flag.ok || t - flag.at >= HA_FLAG_REFRESH_MS;
      });
    const bound = AbortSignal.timeout(HA_FLAG_READS_TIMEOUT_MS);
    for (let i = 0; i < due.length && !signal.aborted && !bound.aborted; i += READ_CONCURRENCY)
      await Promise.all(due.slice(i, i + READ_CONCURRENCY).map((id) => read(id, signal, bound)));
    return domains;
  };

  const own: PropertyDescriptorMap = { list: { value: list, enumerable: true } };
  if (canDefine(driver)) {
    const define: typeof driver.define = async (spec, signal) => {
      await driver.define(spec, signal);
      // What define wrote into the domain's metadata.
      keep(spec.id, { ha: spec.ha, at: now(), ok: true });
    };
    const undefine: typeof driver.undefine = async (vmId, options) => {
      await driver.undefine(vmId, options);
      flags.delete(vmId);
    };
    own.define = { value: define, enumerable: true };
    own.undefine = { value: undefine, enumerable: true };
  }
  return {
    isHa: (vmId) => flags.get(vmId)?.ha === true,
    // Defined, not assigned: drivers are often frozen, and the rest is inherited as it is.
    driver: Object.create(driver, own) as HypervisorDriver,
  };
}
