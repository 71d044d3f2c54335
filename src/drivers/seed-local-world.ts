// The first world of a local simulation: generated domains of one node,
// named after it.

import { createHash } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { nodeKey } from "../core/index.js";
import { NodeIdSchema } from "../gen/debvisor/v1/common_pb.js";
import { NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { DatasetRefSchema } from "../gen/debvisor/v1/storage_pb.js";
import { VmInfoSchema } from "../gen/debvisor/v1/vm_pb.js";
import type { LocalSimulationOptions } from "./local-simulation.js";
import { generateWorld, type SimWorld } from "./simulated-world.js";

/** A fresh world of this one node: generated domains named after the node. */
export function seedLocalWorld(options: LocalSimulationOptions): SimWorld {
  const generated = generateWorld({
    nodes: 1,
    vmsPerNode: Math.max(0, Math.min(50, options.vms ?? 3)),
    seed: options.seed ?? 1,
    now: options.now,
  });
  const world: SimWorld = { nodes: new Map(), vms: new Map(), inflight: new Map(), violations: [] };
  for (const n of generated.nodes.values()) {
    // Its own name and an address from it, not the generated first node's (hv01,
    // 192.0.2.2). Only shown: two nodes may still share an address (254 of them).
    const info = create(NodeInfoSchema, {
      ...n.info,
      id: create(NodeIdSchema, { id: options.nodeId }),
      hostname: `${options.nodeId.toLowerCase()}.sim.debvisor.internal`.slice(0, 253),
      ip: `192.0.2.${((createHash("sha256").update(nodeKey(options.nodeId)).digest()[0] ?? 0) % 254) + 1}`,
    });
    world.nodes.set(options.nodeId, { ...n, info });
  }
  for (const [id, vm] of generated.vms) {
    const vmId = `${options.nodeId}-${id}`.slice(0, 63);
    // Disks are named after the VM, so nodes sharing one storage never share a disk.
    const disks = vm.info.disks.map((d) =>
      create(DatasetRefSchema, { ...d, name: `${vmId}-${d.name.slice(id.length + 1)}` }),
    );
    world.vms.set(vmId, {
      info: create(VmInfoSchema, { ...vm.info, id: vmId, disks }),
      node: options.nodeId,
      state: vm.state,
    });
  }
  return world;
}
