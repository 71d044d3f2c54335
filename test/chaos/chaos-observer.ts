import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import {
  lockNamesOf,
  openSimulatedDiskLocks,
  openSimulatedWatchdog,
} from "../../src/drivers/index.js";
import { VmInfoSchema } from "../../src/gen/debvisor/v1/vm_pb.js";

/** One domain as its node's hypervisor holds it. */
export interface DomainView {
  readonly state: string;
  /** True when this node holds every disk lock of the VM in the shared storage. */
  readonly holdsLocks: boolean;
}

/** What one node's hypervisor holds at one moment. */
export interface NodeView {
  readonly node: string;
  /** Its watchdog fired and the reset is not carried out yet: every domain is down. */
  readonly reset: boolean;
  readonly domains: ReadonlyMap<string, DomainView>;
}

/** Every node's hypervisor, read once. */
export interface Observation {
  readonly nodes: readonly NodeView[];
  /** VM id to the nodes whose hypervisor runs it. */
  readonly running: ReadonlyMap<string, string[]>;
  /** VM id to the nodes whose hypervisor has it defined, running or not. */
  readonly defined: ReadonlyMap<string, string[]>;
}

interface WorldFile {
  vms: { info: JsonValue; node: string; state: string }[];
}

/**
 * Reads the nodes' simulated hypervisors the cheap way, without asking the
 * agents: each node's `sim-world.json` (its domains, written atomically by
 * the agent), its watchdog (a fired watchdog means the node was reset:
 * nothing runs), the handoffs waiting in its inbox (a migrated domain that
 * is the node's as soon as its agent looks), and the shared storage's disk
 * locks. A migrated domain counts on its destination once that node's
 * agent has adopted it from its inbox. "Running" is what the node's own hypervisor says: a domain whose
 * lock another node took still runs until its agent's fencing tick stops
 * it (`holdsLocks` tells these apart).
 */
export function createObserver(nodeDirs: ReadonlyMap<string, string>, sharedDir: string) {
  const locks = openSimulatedDiskLocks(sharedDir);
  const watchdogs = new Map(
    [...nodeDirs].map(([node, dir]) => [node, openSimulatedWatchdog(join(dir, "watchdog.json"))]),
  );
  const readNode = (node: string, dir: string): NodeView => {
    let world: WorldFile = { vms: [] };
    try {
      world = JSON.parse(readFileSync(join(dir, "sim-world.json"), "utf8")) as WorldFile;
    } catch {
      // not written yet
    }
    const reset = watchdogs.get(node)?.expired() ?? false;
    const domains = new Map<string, DomainView>();
    for (const v of world.vms) {
      if (v.node !== node) continue;
      const info = fromJson(VmInfoSchema, v.info);
      const holdsLocks = lockNamesOf(info).every((d) => locks.lock(d)?.owner === node);
      domains.set(info.id, { state: reset ? "stopped" : v.state, holdsLocks });
    }
    return { node, reset, domains };
  };
  return {
    observe(): Observation {
      const nodes = [...nodeDirs].map(([node, dir]) => readNode(node, dir));
      const running = new Map<string, string[]>();
      const defined = new Map<string, string[]>();
      for (const n of nodes)
        for (const [id, d] of n.domains) {
          defined.set(id, [...(defined.get(id) ?? []), n.node]);
          if (d.state === "running") running.set(id, [...(running.get(id) ?? []), n.node]);
        }
      return { nodes, running, defined };
    },
    close: () => locks.close(),
  };
}

export type Observer = ReturnType<typeof createObserver>;
