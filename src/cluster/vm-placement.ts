import { create } from "@bufbuild/protobuf";
import { sameNode } from "../core/index.js";
import { type VmRecord, VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import {
  type Compare,
  encodeMessage,
  getMessage,
  type KvStore,
  type TxnOp,
} from "../store/index.js";

const VMS = "vms/";

/** A VM record as read, with its revision (0: no record yet). */
export interface ReadPlacement {
  readonly rec: VmRecord | undefined;
  readonly rev: number;
}

/** What a change of placement adds to the transaction that records it. */
export interface PlacementChange {
  /** The VM's new generation: the fencing token operations for the new placement carry. */
  readonly generation: bigint;
  /** The VM record as it will be stored. */
  readonly record: VmRecord;
  /** Holds only while the record is still as read (another placement change meanwhile fails the txn). */
  readonly compare: Compare;
  readonly op: TxnOp;
}

/**
 * Whether a copy of the VM on `node` may take its placement from the node
 * it is placed on, that node no longer having it: once that node reported
 * the VM under its placement (it then left outside the control plane), or
 * from `node` itself when it is where the VM was last reported (a placement
 * decided since, a failover say, never reached its node). A VM placed by a
 * create that has not run is taken by no other node's copy: a stolen node
 * certificate reporting it would otherwise take it over.
 */
export function mayTakePlacement(rec: VmRecord, node: string): boolean {
  if (!rec.awaitingReport) return true;
  return rec.confirmedNode !== "" && sameNode(rec.confirmedNode, node);
}

/** Whether `node`'s report of the VM is news for its record: placed there, and not reported there under this placement yet. */
export function confirmsPlacement(rec: VmRecord, node: string): boolean {
  return (
    sameNode(rec.nodeId, node) &&
    (rec.awaitingReport ||
      !sameNode(rec.confirmedNode, node) ||
      rec.confirmedGeneration !== rec.generation)
  );
}

/** Reads a VM's record from the store (not a cache), for a placement change. */
export async function readPlacement(
  store: KvStore,
  vmId: string,
  signal?: AbortSignal,
): Promise<ReadPlacement> {
  const got = await getMessage(store, VmRecordSchema, VMS + vmId, { signal });
  return { rec: got?.message, rev: got?.modRevision ?? 0 };
}

/**
 * The compare and put that move a VM to `nodeId` and bump its generation by
 * one, to be written in the same transaction as the decision that places it
 * (VM creation, migration commit, failover). Everything else the record
 * holds (tenant, stale copies on other nodes) is kept, with `fields` applied over it (a creation sets
 * its own: the one put of the VM's record in the txn must be this one). A
 * txn that fails on the compare must re-read and decide again: someone else
 * changed the VM's placement meanwhile. For a new VM, `read` is
 * `{ rec: undefined, rev: 0 }` (create-if-absent).
 */
export function placementChange(
  vmId: string,
  read: ReadPlacement,
  nodeId: string,
  fields: Partial<
    Omit<VmRecord, "$typeName" | "$unknown" | "id" | "nodeId" | "generation" | "awaitingReport">
  > = {},
): PlacementChange {
  const generation = (read.rec?.generation ?? 0n) + 1n;
  const base = { ...(read.rec ?? { id: vmId }), ...fields };
  const record = create(VmRecordSchema, {
    ...base,
    id: vmId,
    nodeId,
    generation,
    // Until the node reports it there, no other node's copy may take it (mayTakePlacement).
    awaitingReport: true,
    // A copy recorded as stale on the node the VM now moves to is the placement, not stale:
    // left in, the conflict cleanup would stop the VM where it is placed.
    staleCopies: (base.staleCopies ?? []).filter((c) => c.nodeId !== nodeId),
  });
  return {
    generation,
    record,
    compare: { key: VMS + vmId, modRevision: read.rev },
    op: { type: "put", key: VMS + vmId, value: encodeMessage(VmRecordSchema, record) },
  };
}

/**
 * A store key holding how many revisions (decimal text) the stores this one
 * was imported from had reached (`debvisor-rpcd store import` writes it):
 * this store's revisions start again from 1, while the VMs' generations,
 * and their disks' locks, went up to those stores' revisions.
 */
export const GENERATION_FLOOR_KEY = "generation-floor";

/**
 * What {@link firstGeneration} is to stay above: the store's revision, plus
 * the revisions of the stores it was imported from. Read before the write
 * it is for.
 */
export async function generationFloor(store: KvStore, signal?: AbortSignal): Promise<number> {
  const floor = await store.get(GENERATION_FLOOR_KEY, { signal });
  const revision = await store.revision({ signal });
  const imported = floor === undefined ? 0 : Number(new TextDecoder().decode(floor.value));
  return Number.isSafeInteger(imported) && imported > 0 ? imported + revision : revision;
}

/**
 * The generation of a VM record written where none is stored (a creation, a
 * report claiming an unknown VM), from the store's revision read before the
 * write: above every generation the id ever had, so a deleted VM's late
 * start, or its disks' locks freed under its last generation, never outrank
 * the new VM's. Every generation is at most the revision it was first
 * written at, plus the revisions of the stores this one was imported from
 * (a new one is this, a change of placement adds one per write): `revision`
 * is {@link generationFloor}.
 */
export function firstGeneration(revision: number, prev?: VmRecord): bigint {
  const next = (prev?.generation ?? 0n) + 1n;
  const floor = BigInt(revision) + 1n;
  return next > floor ? next : floor;
}

/**
 * The VM's current generation, read from the store: what an operation that
 * starts the VM on a node carries (OperationDispatch.generation). 0 for a VM
 * the control plane never placed.
 */
export async function currentGeneration(
  store: KvStore,
  vmId: string,
  signal?: AbortSignal,
): Promise<bigint> {
  return (await readPlacement(store, vmId, signal)).rec?.generation ?? 0n;
}
