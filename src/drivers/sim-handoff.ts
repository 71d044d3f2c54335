import { existsSync, mkdirSync, readdirSync, rmSync, type Stats, statSync } from "node:fs";
import { join } from "node:path";
import { fromJson, type JsonValue, toJson } from "@bufbuild/protobuf";
import { RpcError } from "../core/index.js";
import { type VmInfo, VmInfoSchema } from "../gen/debvisor/v1/vm_pb.js";
import { readFileIfPresent, writeFileDurably } from "./durable-file.js";
import type { DomainState } from "./hypervisor-driver.js";
import { generateWorld, type SimWorld, saveWorld, type WorldShape } from "./simulated-world.js";

/**
 * How simulated nodes in separate processes hand a migrated domain over,
 * the way libvirt's peer-to-peer migration has the source's daemon talk to
 * the destination's: the source writes the domain into the destination
 * node's `sim-inbox/` (a file per domain, fsynced and renamed into place),
 * and the destination's process adopts it into its own world. The
 * destination is named by its migration URI, `sim://<its directory>`.
 */

/** What one handed-over domain carries. */
export interface Handoff {
  readonly info: VmInfo;
  readonly state: DomainState;
  readonly from: string;
}

interface HandoffFile {
  version: 1;
  info: JsonValue;
  state: DomainState;
  from: string;
}

/** The migration URI of a simulated node kept in `dir`. */
export function simMigrationUri(dir: string): string {
  return `sim://${dir}`;
}

/** True when `uri` names a simulated node (`sim:///<directory>`). */
export function isSimUri(uri: string): boolean {
  return uri.startsWith("sim:///");
}

/** The directory a `sim://` URI names; BACKEND_UNAVAILABLE when it is no simulated node's. */
export function simNodeDir(uri: string): string {
  const dir = isSimUri(uri) ? uri.slice("sim://".length) : "";
  if (dir === "" || dir.includes("\0") || !existsSync(join(dir, "sim-world.json")))
    throw new RpcError("BACKEND_UNAVAILABLE", {
      message: "the destination is not reachable",
      cause: new Error(`no simulated node at ${uri}`),
    });
  return dir;
}

const inbox = (dir: string) => join(dir, "sim-inbox");

const statIfPresent = (file: string): Stats | undefined => {
  try {
    return statSync(file);
  } catch {
    return undefined;
  }
};

/** Writes a domain into the destination's inbox, durably. */
export function sendHandoff(destDir: string, handoff: Handoff): void {
  mkdirSync(inbox(destDir), { recursive: true, mode: 0o700 });
  const data: HandoffFile = {
    version: 1,
    info: toJson(VmInfoSchema, handoff.info),
    state: handoff.state,
    from: handoff.from,
  };
  writeFileDurably(join(inbox(destDir), `${handoff.info.id}.json`), JSON.stringify(data));
}

/**
 * Domains waiting in `dir`'s inbox, oldest name first, each with how long
 * ago it was written. With `remove`, each that `take` took (did not answer
 * false for) is removed once read; one left is offered again next time.
 */
export function readHandoffs(
  dir: string,
  take: (h: Handoff, ageMs: number) => boolean,
  remove: boolean,
): void {
  let names: string[];
  try {
    names = readdirSync(inbox(dir)).filter((n) => n.endsWith(".json"));
  } catch {
    return;
  }
  for (const name of names.sort()) {
    const file = join(inbox(dir), name);
    const text = readFileIfPresent(file);
    if (text === undefined) continue;
    const data = JSON.parse(text) as HandoffFile;
    const ageMs = Date.now() - (statIfPresent(file)?.mtimeMs ?? Date.now());
    const h = { info: fromJson(VmInfoSchema, data.info), state: data.state, from: data.from };
    if (take(h, ageMs) && remove) rmSync(file, { force: true });
  }
}

/**
 * Splits a generated cluster (the shape of the embedded simulation: node-01
 * with vm-001...) into one world per node, written to `dirOf(node)` unless
 * that node already has one. Dev mode's agents start from these, so their
 * VMs are the ones the embedded simulation would have.
 */
export function seedNodeWorlds(shape: WorldShape, dirOf: (nodeId: string) => string): SimWorld {
  const world = generateWorld(shape);
  for (const [nodeId, node] of world.nodes) {
    const dir = dirOf(nodeId);
    const file = join(dir, "sim-world.json");
    if (existsSync(file)) continue;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const own: SimWorld = {
      nodes: new Map([[nodeId, node]]),
      vms: new Map([...world.vms].filter(([, vm]) => vm.node === nodeId)),
      inflight: new Map(),
      violations: [],
    };
    saveWorld(own, file);
  }
  return world;
}
