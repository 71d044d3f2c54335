// What the libvirt driver reads of its domains: one domain's state
// (`domstate`), its description (`dominfo`), the list of them all and the
// HA flag of DebVisor's metadata (`metadata`).

import { RpcError, throwIfAborted } from "../core/index.js";
import type { CommandResult } from "./command-runner.js";
import type { DomainState, DomainStatus, HaFlagDriver } from "./hypervisor-driver.js";
import type { LibvirtContext } from "./libvirt-context.js";
import { DEBVISOR_VM_XMLNS } from "./libvirt-domain-xml.js";
import { checkVmId, isDomainName } from "./libvirt-identifiers.js";
import { isRace } from "./virsh-invoker.js";
import { parseDominfo, parseDomstate, parseHaMetadata, parseNameList } from "./virsh-parse.js";

/** Domains described by dominfo at once while listing. */
const LIST_CONCURRENCY = 4;

/** The libvirt driver's reads. */
export interface LibvirtQueries {
  /** `virsh domstate`; VM_NOT_FOUND when there is no such domain. Does not check the id. */
  domstate(vmId: string, signal: AbortSignal): Promise<DomainState>;
  /** `virsh dominfo`; undefined when there is no such domain. */
  info(vmId: string, signal: AbortSignal): Promise<DomainStatus | undefined>;
  /** Every domain whose name the driver can address, sorted by name. */
  list(signal: AbortSignal): Promise<DomainStatus[]>;
  /** See {@link HaFlagDriver.haFlag}. */
  haFlag(vmId: string, signal: AbortSignal): Promise<boolean>;
}

/** Creates the reads over the node's virsh. */
export function createLibvirtQueries(ctx: LibvirtContext): LibvirtQueries {
  const { log, virsh, parsed } = ctx;

  async function info(vmId: string, signal: AbortSignal): Promise<DomainStatus | undefined> {
    checkVmId(vmId);
    throwIfAborted(signal);
    const args = ["dominfo", "--domain", vmId];
    let result: CommandResult;
    try {
      result = await virsh(args, signal);
    } catch (e) {
      if (e instanceof RpcError && e.reason === "VM_NOT_FOUND") return undefined;
      throw e;
    }
    const d = parsed(args, result, parseDominfo);
    return {
      id: vmId,
      state: d.state,
      vcpus: d.vcpus,
      memoryBytes: d.maxMemoryBytes,
      persistent: d.persistent,
    };
  }

  return {
    async domstate(vmId, signal) {
      const args = ["domstate", "--domain", vmId];
      return parsed(args, await virsh(args, signal), parseDomstate);
    },
    info,
    async list(signal) {
      throwIfAborted(signal);
      const args = ["list", "--all", "--name"];
      const names = parsed(args, await virsh(args, signal), parseNameList);
      const usable = names.filter((name) => {
        if (isDomainName(name)) return true;
        log.warn({ domain: name }, "libvirt domain name outside the vm id rules; not listed");
        return false;
      });
      usable.sort();
      const out: DomainStatus[] = [];
      for (let i = 0; i < usable.length; i += LIST_CONCURRENCY) {
        const batch = await Promise.all(
          usable.slice(i, i + LIST_CONCURRENCY).map((name) => info(name, signal)),
        );
        // A domain undefined between list and dominfo is simply gone.
        for (const d of batch) if (d !== undefined) out.push(d);
      }
      return out;
    },
    async haFlag(vmId, signal) {
      checkVmId(vmId);
      throwIfAborted(signal);
      const args = ["metadata", "--domain", vmId, "--uri", DEBVISOR_VM_XMLNS];
      let result: CommandResult;
      try {
        result = await virsh(args, signal);
      } catch (e) {
        // No element in DebVisor's namespace: a domain defined by hand, not HA.
        if (isRace(e, /metadata not found|Requested metadata element is not present/i))
          return false;
        throw e;
      }
      return parsed(args, result, parseHaMetadata);
    },
  };
}
