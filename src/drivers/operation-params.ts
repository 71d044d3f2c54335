import { create } from "@bufbuild/protobuf";
import { DatasetRefSchema, StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import { type VmInfo, VmInfoSchema } from "../gen/debvisor/v1/vm_pb.js";
import type { MigrationProgress } from "./hypervisor-driver.js";

/**
 * How a HypervisorDriver call travels as an agent operation's string
 * parameters and progress messages: written by the control plane's agent
 * executors, read by the agent. Kept in one place so both ends agree.
 */

/** The node label that says how other nodes reach this one's hypervisor for a migration. */
export const MIGRATION_URI_LABEL = "debvisor.io/migration-uri";

/** Disks travel one per parameter (`disk.0`, ...), as `zfs:pool/name` or `rbd:pool/name`. */
const DISK = /^(zfs|rbd):([^/]+)\/(.+)$/;
/** Disks carried at most (OperationDispatch.params holds 32 entries). */
const MAX_DISKS = 24;

/** The parameters of a RECOVER operation that let a backend define the VM from the control plane's view. */
export function vmDefinitionParams(vm: VmInfo): Record<string, string> {
  const out: Record<string, string> = {
    name: vm.name,
    vcpus: String(vm.vcpus),
    memory_bytes: String(vm.memoryBytes),
    cpu_model: vm.cpuModel,
    ha: String(vm.ha),
    live_migratable: String(vm.liveMigratable),
  };
  vm.disks.slice(0, MAX_DISKS).forEach((d, i) => {
    const kind = d.backend === StorageBackend.BACKEND_ZFS ? "zfs" : "rbd";
    out[`disk.${i}`] = `${kind}:${d.pool}/${d.name}`;
  });
  return out;
}

/** The VM the parameters describe, or undefined when they carry no definition. */
export function vmFromDefinitionParams(
  vmId: string,
  params: Readonly<Record<string, string>>,
): VmInfo | undefined {
  if (params.vcpus === undefined || params.memory_bytes === undefined) return undefined;
  const disks = [];
  for (let i = 0; i < MAX_DISKS; i++) {
    const m = DISK.exec(params[`disk.${i}`] ?? "");
    if (m === null) break;
    disks.push(
      create(DatasetRefSchema, {
        backend: m[1] === "zfs" ? StorageBackend.BACKEND_ZFS : StorageBackend.BACKEND_RBD,
        pool: m[2],
        name: m[3],
      }),
    );
  }
  const vcpus = Number(params.vcpus);
  let memoryBytes = 0n;
  try {
    memoryBytes = BigInt(params.memory_bytes);
  } catch {
    return undefined;
  }
  if (!Number.isInteger(vcpus) || vcpus < 0 || memoryBytes < 0n) return undefined;
  return create(VmInfoSchema, {
    id: vmId,
    name: params.name ?? vmId,
    vcpus,
    memoryBytes,
    cpuModel: params.cpu_model ?? "",
    ha: params.ha === "true",
    liveMigratable: params.live_migratable === "true",
    disks,
  });
}

/** A migration progress report's figures as an operation progress message. */
export function formatTransfer(p: MigrationProgress): string {
  return `transferred=${p.bytesTransferred} total=${p.bytesTotal} downtime_ms=${p.downtimeEstimateMs ?? 0}`;
}

/** The figures of a progress message written by {@link formatTransfer} (zeros when absent). */
export function parseTransfer(message: string): {
  bytesTransferred: bigint;
  bytesTotal: bigint;
  downtimeEstimateMs: number;
} {
  const m = /^transferred=(\d+) total=(\d+) downtime_ms=(\d+)$/.exec(message);
  return m === null
    ? { bytesTransferred: 0n, bytesTotal: 0n, downtimeEstimateMs: 0 }
    : {
        bytesTransferred: BigInt(m[1] as string),
        bytesTotal: BigInt(m[2] as string),
        downtimeEstimateMs: Number(m[3]),
      };
}
