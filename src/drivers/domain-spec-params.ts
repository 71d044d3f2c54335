import { ID_PATTERN, RpcError } from "../core/index.js";
import type { DomainDisk, DomainSpec } from "./hypervisor-driver.js";

/** Disks a spec carries at most (the API's VmSpec.disks max_items). */
export const MAX_DOMAIN_DISKS = 8;

/** Dataset pools and names as the API's DatasetRef allows them. */
const DATASET_PART = /^[A-Za-z0-9][A-Za-z0-9_.:/@-]*$/;
const CPU_MODEL = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/**
 * A domain spec as the string parameters of an operation dispatch
 * (`name`, `vcpus`, `memory_bytes`, `ha`, `cpu_model`, and `disk.<n>` as
 * JSON `{"backend","pool","name","size"}`): each value stays well under the
 * dispatch's 1024-character limit, however many disks.
 */
export function domainSpecParams(spec: DomainSpec): Record<string, string> {
  const out: Record<string, string> = {
    name: spec.name,
    vcpus: String(spec.vcpus),
    memory_bytes: String(spec.memoryBytes),
    ha: String(spec.ha),
    cpu_model: spec.cpuModel,
  };
  spec.disks.forEach((d, i) => {
    out[`disk.${i}`] = JSON.stringify({
      backend: d.backend,
      pool: d.pool,
      name: d.name,
      size: String(d.sizeBytes),
    });
  });
  return out;
}

/**
 * The spec of `vmId` back from dispatch parameters, checked as the API
 * checks a VmSpec: INVALID_ARGUMENT for anything a hypervisor must not be
 * given (0 vCPUs, absurd memory, too many disks, bad names).
 */
export function domainSpecFromParams(
  vmId: string,
  params: Readonly<Record<string, string>>,
): DomainSpec {
  const bad = (what: string): never => {
    throw new RpcError("INVALID_ARGUMENT", { message: `vm spec: ${what}` });
  };
  if (!ID_PATTERN.test(vmId)) bad("invalid vm id");
  const vcpus = Number(params.vcpus ?? "");
  if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > 128) bad("vcpus must be 1 to 128");
  const memText = params.memory_bytes ?? "";
  if (!/^[0-9]{1,16}$/.test(memText)) bad("memory_bytes must be a number");
  const memoryBytes = BigInt(memText);
  if (memoryBytes < 64n * 1024n ** 2n || memoryBytes > 4n * 1024n ** 4n)
    bad("memory_bytes must be 64 MiB to 4 TiB");
  const cpuModel = params.cpu_model ?? "";
  if (cpuModel !== "" && (cpuModel.length > 64 || !CPU_MODEL.test(cpuModel)))
    bad("invalid cpu_model");
  const name = params.name ?? "";
  if (name.length > 128) bad("name is longer than 128 characters");
  const disks: DomainDisk[] = [];
  for (let i = 0; params[`disk.${i}`] !== undefined; i++) {
    if (i >= MAX_DOMAIN_DISKS) bad(`at most ${MAX_DOMAIN_DISKS} disks`);
    disks.push(parseDisk(params[`disk.${i}`] ?? "", bad));
  }
  return { id: vmId, name, vcpus, memoryBytes, disks, ha: params.ha === "true", cpuModel };
}

function parseDisk(text: string, bad: (what: string) => never): DomainDisk {
  let d: Record<string, unknown>;
  try {
    d = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return bad("invalid disk");
  }
  const { backend, pool, name, size } = d;
  if (backend !== "zfs" && backend !== "rbd") return bad("disk backend must be zfs or rbd");
  if (typeof pool !== "string" || pool.length > 128 || !DATASET_PART.test(pool))
    return bad("invalid disk pool");
  if (typeof name !== "string" || name.length > 255 || !DATASET_PART.test(name))
    return bad("invalid disk name");
  if (typeof size !== "string" || !/^[0-9]{1,16}$/.test(size)) return bad("invalid disk size");
  return { backend, pool, name, sizeBytes: BigInt(size) };
}
