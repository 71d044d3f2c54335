// Defining and undefining libvirt domains: `virsh define` of the domain XML
// a spec makes, and `virsh undefine` (a running domain destroyed first only
// when forced).

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RpcError, throwIfAborted } from "../core/index.js";
import type { DomainSpec } from "./hypervisor-driver.js";
import type { LibvirtContext } from "./libvirt-context.js";
import { domainXml } from "./libvirt-domain-xml.js";
import { checkVmId } from "./libvirt-identifiers.js";
import type { LibvirtPower } from "./libvirt-power.js";
import type { LibvirtQueries } from "./libvirt-queries.js";

/** The libvirt driver's define and undefine. */
export interface LibvirtDefinition {
  /**
   * `virsh define --file` of the spec's domain XML, written to a private
   * temporary file. libvirt here attaches existing datasets only: a new
   * disk is DEFINE_UNSUPPORTED (create the dataset through storage first).
   */
  define(spec: DomainSpec, signal: AbortSignal): Promise<void>;
  /** `virsh undefine`; a running domain is refused unless forced (`destroy` first). */
  undefine(vmId: string, options: { force: boolean; signal: AbortSignal }): Promise<void>;
}

/** Creates define and undefine over the node's virsh, its reads and its stop. */
export function createLibvirtDefinition(
  ctx: LibvirtContext,
  queries: Pick<LibvirtQueries, "domstate" | "info">,
  stop: LibvirtPower["stop"],
): LibvirtDefinition {
  const { s, virsh } = ctx;
  const { domstate, info } = queries;
  return {
    async define(spec, signal) {
      checkVmId(spec.id);
      throwIfAborted(signal);
      if (spec.disks.some((d) => d.sizeBytes > 0n))
        throw new RpcError("DEFINE_UNSUPPORTED", {
          message: "libvirt nodes attach existing datasets only; create the disk first",
        });
      if ((await info(spec.id, signal)) !== undefined) throw new RpcError("VM_EXISTS");
      const dir = mkdtempSync(join(tmpdir(), "dv-define-"));
      try {
        const file = join(dir, "domain.xml");
        writeFileSync(file, domainXml(spec, s.uri.startsWith("test:") ? "test" : "kvm"), {
          mode: 0o600,
        });
        await virsh(["define", "--file", file], signal);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
    async undefine(vmId, options) {
      checkVmId(vmId);
      throwIfAborted(options.signal);
      const state = await domstate(vmId, options.signal);
      if (state !== "stopped") {
        if (!options.force) throw new RpcError("VM_RUNNING");
        await stop(vmId, { force: true, signal: options.signal });
      }
      await virsh(["undefine", "--domain", vmId], options.signal);
    },
  };
}
