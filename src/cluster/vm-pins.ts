/**
 * Pins: what a move wrote on a node's record for a while (a VM arrived, or
 * left), so the node's heartbeats from before the move do not undo it.
 */
import { create } from "@bufbuild/protobuf";
import {
  type NodeRecord,
  NodeRecordSchema,
  type VmPin,
} from "../gen/debvisor/store/v1/records_pb.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";

/** The record with `pin` replacing any earlier pin of the same VM. */
export function pinned(rec: NodeRecord, pin: VmPin): NodeRecord {
  const id = pin.vm?.id ?? "";
  return create(NodeRecordSchema, {
    ...rec,
    pins: [...rec.pins.filter((p) => p.vm?.id !== id), pin],
  });
}

/** A heartbeat's VM list corrected by the pins still in force (the same array when none apply). */
export function applyPins(vms: VmInfo[], pins: readonly VmPin[]): VmInfo[] {
  let out = vms;
  for (const pin of pins) {
    const id = pin.vm?.id ?? "";
    const has = out.some((v) => v.id === id);
    if (pin.present && !has && pin.vm !== undefined) out = [...out, pin.vm];
    else if (!pin.present && has) out = out.filter((v) => v.id !== id);
  }
  return out;
}
