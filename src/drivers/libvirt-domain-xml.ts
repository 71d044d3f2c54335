import type { DomainSpec } from "./hypervisor-driver.js";

/** The namespace of DebVisor's metadata in a domain's XML (`<dv:vm ha='true'/>`). */
export const DEBVISOR_VM_XMLNS = "https://debvisor.io/xmlns/vm/1";

/** XML text with the five special characters escaped (names are checked, but never trusted). */
function esc(text: string): string {
  return text.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Virtio disk targets in order: vda, vdb, ... */
const target = (i: number) => `vd${String.fromCharCode(97 + i)}`;

/**
 * The libvirt domain XML of `spec`: memory in bytes, vCPUs, the CPU mode or
 * model, each disk as virtio (RBD images as network disks of the pool,
 * ZFS datasets as their zvol block device), and the HA flag in DebVisor's
 * metadata namespace. `type` is the hypervisor (`kvm`, or `test` for
 * libvirt's test driver).
 */
export function domainXml(spec: DomainSpec, type: "kvm" | "test"): string {
  const cpu =
    spec.cpuModel === "" || spec.cpuModel === "host-model"
      ? "<cpu mode='host-model'/>"
      : spec.cpuModel === "host-passthrough"
        ? "<cpu mode='host-passthrough'/>"
        : `<cpu mode='custom'><model>${esc(spec.cpuModel)}</model></cpu>`;
  const disks = spec.disks.map((d, i) =>
    d.backend === "rbd"
      ? `    <disk type='network' device='disk'><driver name='qemu' type='raw'/><source protocol='rbd' name='${esc(`${d.pool}/${d.name}`)}'/><target dev='${target(i)}' bus='virtio'/></disk>`
      : `    <disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='${esc(`/dev/zvol/${d.pool}/${d.name}`)}'/><target dev='${target(i)}' bus='virtio'/></disk>`,
  );
  return [
    `<domain type='${type}'>`,
    `  <name>${esc(spec.id)}</name>`,
    ...(spec.name === "" ? [] : [`  <title>${esc(spec.name)}</title>`]),
    `  <memory unit='b'>${spec.memoryBytes}</memory>`,
    `  <vcpu>${spec.vcpus}</vcpu>`,
    "  <os><type>hvm</type></os>",
    `  ${cpu}`,
    `  <metadata><dv:vm xmlns:dv='${DEBVISOR_VM_XMLNS}' ha='${spec.ha}'/></metadata>`,
    "  <devices>",
    ...disks,
    "  </devices>",
    "</domain>",
    "",
  ].join("\n");
}
