import type { DomainState } from "./hypervisor-driver.js";

/** What of a domain its host's use depends on. */
export interface UsingDomain {
  readonly state: DomainState;
  readonly vcpus: number;
  readonly memoryBytes: bigint;
}

/** A node's CPU load and memory in use, as a heartbeat's Health reports them. */
export interface NodeUsage {
  readonly cpuLoad: number;
  readonly memUsedPct: number;
}

/**
 * What a simulated node uses, from its domains alone (simulated guests have
 * no workload to measure): memory in use is the running and paused domains'
 * memory (a paused guest keeps its RAM), the CPU load one per running vCPU
 * (every guest busy), each bounded by the node's capacity. No domains
 * running: 0 and 0. A capacity of 0 counts as nothing to use.
 */
export function simulatedUsage(
  domains: readonly UsingDomain[],
  capacity: { readonly cpuCores: number; readonly memoryBytes: bigint } | undefined,
): NodeUsage {
  let vcpus = 0;
  let memory = 0n;
  for (const d of domains) {
    if (d.state === "running") vcpus += d.vcpus;
    if (d.state === "running" || d.state === "paused") memory += d.memoryBytes;
  }
  const cores = capacity?.cpuCores ?? 0;
  const total = capacity?.memoryBytes ?? 0n;
  return {
    cpuLoad: Math.min(vcpus, cores),
    memUsedPct: total === 0n ? 0 : Math.min(100, (Number(memory) / Number(total)) * 100),
  };
}
