/**
 * What a node's heartbeat may say about placements: which reported VMs it
 * keeps, the placements it claims or confirms, the copies it holds of VMs
 * placed elsewhere, and the events told about them. Pure functions over one
 * report; the inventory's heartbeat writes what they decide.
 */
import { create } from "@bufbuild/protobuf";
import { nodeKey, sameNode } from "../core/index.js";
import {
  type NodeRecord,
  type VmRecord,
  VmRecordSchema,
} from "../gen/debvisor/store/v1/records_pb.js";
import { type VmInfo, VmState } from "../gen/debvisor/v1/vm_pb.js";
import type { EventSink } from "./event-recorder.js";
import { confirmsPlacement, firstGeneration, mayTakePlacement } from "./vm-placement.js";
import { type VmFacts, vmRecord } from "./vm-records.js";

/** Placements one heartbeat claims at most (the rest are claimed by the next ones). */
export const MAX_CLAIMS = 50;

/** What a report placed: the VMs it keeps, placements it claims, and VMs another node holds. */
export interface Placement {
  readonly vms: VmInfo[];
  readonly claims: { rec: VmRecord; rev: number }[];
  /** The claims' VMs, with the node that held each before ("" for none). */
  readonly placed: { vmId: string; tenant: string; was: string }[];
  readonly refused: { vmId: string; holder: string }[];
  /** Copies of VMs placed elsewhere (conflicts), recorded on the VMs' records after the report. */
  readonly stale: VmInfo[];
}

/**
 * The VMs of a node's report that the node may describe: those placed on it,
 * and those no node holds (whose placement it claims, at most MAX_CLAIMS
 * per report). A VM placed on another node is left out (a stale copy, a
 * conflict) unless that node's own last report no longer has it (it moved
 * outside the control plane) and this copy is not a known stale one that is
 * stopped or being removed. A
 * report never changes a VM's tenant, whatever it claims.
 */
export function placeReported(
  nodeId: string,
  vms: VmInfo[],
  facts: VmFacts,
  nodes: (id: string) => NodeRecord | undefined,
  options: {
    /** The store's revision, read before the report is written (for a VM no record holds). */
    revision: number;
    /** The report's own VMs, whose placements on the node are written as confirmed; undefined: none. */
    confirmFrom: readonly VmInfo[] | undefined;
  },
): Placement {
  const { revision } = options;
  const claims: { rec: VmRecord; rev: number }[] = [];
  const placed: { vmId: string; tenant: string; was: string }[] = [];
  const refused: { vmId: string; holder: string }[] = [];
  const stale: VmInfo[] = [];
  const kept = vms.filter((vm) => {
    const fact = facts.get(vm.id);
    const holder = fact?.rec.nodeId ?? "";
    if (holder !== "" && sameNode(holder, nodeId)) {
      // Its node has it under this placement: written with the report, once per placement
      // (within the bound of records one report writes; the next report writes the rest).
      if (
        fact !== undefined &&
        claims.length < MAX_CLAIMS &&
        confirmsPlacement(fact.rec, nodeId) &&
        options.confirmFrom?.some((v) => v.id === vm.id) === true
      )
        claims.push({ rec: confirmed(fact.rec, nodeId, fact.rec.generation), rev: fact.rev });
      return true;
    }
    // A copy known to be stale, stopped or being removed, stays one, even while
    // its placement's node does not report the VM (a running one that node
    // no longer has may have moved outside the control plane, unless it never
    // had it: a create that has not run there yet is no VM for another node to take).
    const copy = fact?.rec.staleCopies.find((c) => sameNode(c.nodeId, nodeId));
    const known = copy !== undefined && (copy.cleanupSent || vm.state === VmState.STOPPED);
    if (
      fact !== undefined &&
      holder !== "" &&
      (known || stillHolds(nodes(nodeKey(holder)), vm.id) || !mayTakePlacement(fact.rec, nodeId))
    ) {
      // A copy of a VM placed elsewhere: a conflict, never a placement.
      refused.push({ vmId: vm.id, holder });
      stale.push(vm);
      return false;
    }
    if (claims.length >= MAX_CLAIMS) return false;
    // A new placement, found rather than decided: a new generation all the same
    // (for a VM no record holds, above any its id had: a deleted VM's own report comes late).
    const generation = fact === undefined ? firstGeneration(revision) : fact.rec.generation + 1n;
    claims.push({
      rec: confirmed(vmRecord(vm.id, fact, { nodeId, generation }), nodeId, generation),
      rev: fact?.rev ?? 0,
    });
    placed.push({ vmId: vm.id, tenant: fact?.rec.tenant ?? "", was: holder });
    return true;
  });
  return { vms: kept.length === vms.length ? vms : kept, claims, placed, refused, stale };
}

/** `rec` as reported by `node` where it is placed, under `generation`. */
function confirmed(rec: VmRecord, node: string, generation: bigint): VmRecord {
  return create(VmRecordSchema, {
    ...rec,
    confirmedNode: node,
    confirmedGeneration: generation,
    awaitingReport: false,
  });
}

/** Events of a recorded report: each VM it placed, and each it claims that another node holds. */
export function tellPlacement(
  events: EventSink,
  nodeId: string,
  p: Placement,
  facts: VmFacts,
): void {
  for (const { vmId, tenant, was } of p.placed) {
    events.emit({
      kind: "vm",
      id: vmId,
      tenant,
      type: "Placed",
      message:
        was === ""
          ? `first reported by ${nodeId}`
          : `reported by ${nodeId}, no longer by ${was}: placed on ${nodeId}`,
      source: "inventory",
    });
  }
  for (const r of p.refused)
    events.emit({
      kind: "vm",
      id: r.vmId,
      tenant: facts.get(r.vmId)?.rec.tenant ?? "",
      type: "Conflict",
      message: `${nodeId} reports ${r.vmId}, which runs on ${r.holder}; the report is ignored until ${r.holder} no longer has it`,
      warning: true,
      source: "inventory",
    });
}

/** Whether a node's last report (or a pin on it) still has the VM. */
function stillHolds(rec: NodeRecord | undefined, vmId: string): boolean {
  if (rec === undefined) return false;
  if (rec.pins.some((p) => p.present && p.vm?.id === vmId)) return true;
  return (rec.health?.vms ?? []).some((v) => v.id === vmId);
}
