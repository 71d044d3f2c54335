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
  /** `unmoved`: taken from another node, so written only while no migration or failover holds it. */
  readonly claims: { rec: VmRecord; rev: number; unmoved?: boolean }[];
  /** The claims' VMs, with the node that held each before ("" for none). */
  readonly placed: { vmId: string; tenant: string; was: string }[];
  /** `moving`: refused because a migration or failover holds the VM. */
  readonly refused: { vmId: string; holder: string; moving?: boolean }[];
  /** Copies of VMs placed elsewhere (conflicts), recorded on the VMs' records after the report. */
  readonly stale: VmInfo[];
}

/**
 * The VMs of a node's report that the node may describe: those placed on it,
 * and those no node holds (whose placement it claims, at most MAX_CLAIMS
 * per report). A VM placed on another node is left out (a stale copy, a
 * conflict) unless that node's own last report no longer has it (it moved
 * outside the control plane) and this copy is not a known stale one that is
 * stopped or being removed, and no migration or failover holds the VM (see
 * {@link takeoverCandidates}). A report never changes a VM's tenant, whatever
 * it claims.
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
    /**
     * Whether a migration or failover held each of {@link takeoverCandidates}'s VMs when
     * read before the report; a candidate not read is not claimed by this report.
     */
    moving: ReadonlyMap<string, boolean>;
    /** The VMs no record holds this report may claim (first-claims.ts); undefined: any. */
    newAllowed?: ReadonlySet<string>;
  },
): Placement {
  const { revision } = options;
  const claims: Placement["claims"] = [];
  const placed: { vmId: string; tenant: string; was: string }[] = [];
  const refused: Placement["refused"] = [];
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
    if (fact !== undefined && holder !== "" && !takesOver(nodeId, vm, fact.rec, nodes)) {
      // A copy of a VM placed elsewhere: a conflict, never a placement.
      refused.push({ vmId: vm.id, holder });
      stale.push(vm);
      return false;
    }
    if (claims.length >= MAX_CLAIMS) return false;
    // A VM no record holds: a record written on the node's word alone, within its budget.
    if (fact === undefined && options.newAllowed?.has(vm.id) === false) return false;
    if (holder !== "") {
      const moving = options.moving.get(vm.id);
      // Not read before the report (past the bound, or a pin since): the next report claims it.
      if (moving === undefined) return false;
      // A failover to another node begun while this one was away (its self-fenced copy
      // reported on its return): taken back now, the failover's restart ran all the same,
      // and the self-fence of the restarted copy on its cut off target was not marked, the
      // placement not being there: an HA VM stopped for good (chaos, seed 42).
      if (moving) {
        refused.push({ vmId: vm.id, holder, moving });
        stale.push(vm);
        return false;
      }
    }
    // A new placement, found rather than decided: a new generation all the same
    // (for a VM no record holds, above any its id had: a deleted VM's own report comes late).
    const generation = fact === undefined ? firstGeneration(revision) : fact.rec.generation + 1n;
    claims.push({
      rec: confirmed(vmRecord(vm.id, fact, { nodeId, generation }), nodeId, generation),
      rev: fact?.rev ?? 0,
      unmoved: holder !== "",
    });
    placed.push({ vmId: vm.id, tenant: fact?.rec.tenant ?? "", was: holder });
    return true;
  });
  return { vms: kept.length === vms.length ? vms : kept, claims, placed, refused, stale };
}

/**
 * Whether `node`'s copy of a VM placed on another node may take its
 * placement: not a known stale copy (stopped, or being removed), not while
 * the placed node's last report still has it, and only as {@link mayTakePlacement} allows.
 */
function takesOver(
  node: string,
  vm: VmInfo,
  rec: VmRecord,
  nodes: (id: string) => NodeRecord | undefined,
): boolean {
  const copy = rec.staleCopies.find((c) => sameNode(c.nodeId, node));
  const known = copy !== undefined && (copy.cleanupSent || vm.state === VmState.STOPPED);
  return !known && !stillHolds(nodes(nodeKey(rec.nodeId)), vm.id) && mayTakePlacement(rec, node);
}

/**
 * The VMs of `node`'s report (pins applied) that it would take from the node
 * they are placed on, at most MAX_CLAIMS: whether a migration or failover
 * holds each is read before the report is placed (placeReported's `moving`).
 */
export function takeoverCandidates(
  node: string,
  vms: readonly VmInfo[],
  facts: VmFacts,
  nodes: (id: string) => NodeRecord | undefined,
): string[] {
  const out: string[] = [];
  for (const vm of vms) {
    if (out.length >= MAX_CLAIMS) break;
    const rec = facts.get(vm.id)?.rec;
    if (rec === undefined || rec.nodeId === "" || sameNode(rec.nodeId, node)) continue;
    if (takesOver(node, vm, rec, nodes)) out.push(vm.id);
  }
  return out;
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
      message: r.moving
        ? `${nodeId} reports ${r.vmId}, placed on ${r.holder} while a migration or failover of it runs; the report is ignored until that ends`
        : `${nodeId} reports ${r.vmId}, which runs on ${r.holder}; the report is ignored until ${r.holder} no longer has it`,
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
