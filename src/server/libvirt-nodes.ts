import { create } from "@bufbuild/protobuf";
import type { ReportedNode } from "../cluster/index.js";
import type { Logger } from "../core/index.js";
import { createLibvirtDriver } from "../drivers/index.js";
import { NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import type { Config } from "./config-schema.js";

/** A libvirt node from the configuration: its registration, its driver and its URI. */
export interface LibvirtNode extends ReportedNode {
  readonly uri: string;
}

/** The nodes of `libvirt.nodes`, each with a libvirt driver over virsh, by node id. */
export function libvirtNodes(config: Config, logger: Logger): Map<string, LibvirtNode> {
  const out = new Map<string, LibvirtNode>();
  for (const n of config.libvirt.nodes) {
    if (out.has(n.id)) throw new TypeError(`libvirt.nodes: node ${n.id} is listed twice`);
    out.set(n.id, {
      uri: n.uri,
      info: create(NodeInfoSchema, {
        id: { id: n.id },
        hostname: n.hostname ?? "",
        capacity: { cpuCores: n.cpuCores, memoryBytes: BigInt(n.memoryBytes) },
        cpuModel: n.cpuModel,
        sharedPools: [...n.sharedPools],
        labels: { "debvisor.io/driver": "libvirt" },
      }),
      driver: createLibvirtDriver({
        nodeId: n.id,
        uri: n.uri,
        virsh: config.libvirt.virsh,
        timeoutMs: config.libvirt.timeoutMs,
        migrateTimeoutMs: config.libvirt.migrateTimeoutMs,
        logger,
      }),
    });
  }
  return out;
}
