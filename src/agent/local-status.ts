import { agentFiles } from "../client/index.js";
import { silentLogger } from "../core/index.js";
import type { DomainStatus } from "../drivers/index.js";
import type { AgentConfig } from "./agent-config.js";
import { enrolledNodeId, openNodeHypervisor } from "./node-hypervisor.js";
import { type NodeStorageStatus, storageStatus } from "./node-storage.js";

/** What `debvisor-agent status -o json` prints: the node's domains and storage as it holds them. */
export interface LocalStatus {
  readonly node: string;
  /** The hypervisor driver's kind (`sim`, `libvirt`). */
  readonly driver: string;
  /** The hypervisor's domains; memoryBytes as a decimal string (JSON has no bigint). */
  readonly domains: (Omit<DomainStatus, "memoryBytes"> & { readonly memoryBytes: string })[];
  /** Absent when the node has no storage (`none`). */
  readonly storage?: NodeStorageStatus;
}

/**
 * Reads the enrolled node's domains and storage from its hypervisor, opened
 * read-only (beside a running agent: writes nothing, adopts nothing) and
 * closed before it returns, whatever happens; nothing is kept between calls.
 * Each driver call gets 30 s.
 */
export async function readLocalStatus(config: AgentConfig): Promise<LocalStatus> {
  const node = enrolledNodeId(agentFiles(config.dir));
  const hv = openNodeHypervisor(config, node, silentLogger, { readOnly: true });
  try {
    const domains = await hv.domains(AbortSignal.timeout(30_000));
    const storage = await storageStatus(config, node, hv);
    return {
      node,
      driver: hv.driver.kind,
      domains: domains.map((d) => ({ ...d, memoryBytes: String(d.memoryBytes) })),
      ...(storage === undefined ? {} : { storage }),
    };
  } finally {
    hv.close();
  }
}
