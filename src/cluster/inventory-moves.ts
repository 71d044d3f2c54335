/**
 * The inventory's moves of a VM from one node's last report to another's
 * (after a migration or a failover): its placement and both nodes' lists in
 * one transaction, with pins so the nodes' older heartbeats do not undo it.
 */
import { create } from "@bufbuild/protobuf";
import { type Clock, nodeKey, RpcError } from "../core/index.js";
import {
  NodeRecordSchema,
  VmPinSchema,
  VmRecordSchema,
} from "../gen/debvisor/store/v1/records_pb.js";
import { NodeIdSchema } from "../gen/debvisor/v1/common_pb.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";
import {
  type Compare,
  encodeMessage,
  getMessage,
  type KvStore,
  LOST,
  retryWhileLost,
} from "../store/index.js";
import { withVms } from "./faced-records.js";
import type { Inventory } from "./inventory.js";
import { MAX_ATTEMPTS, NODE_PREFIX, type NodeRecords } from "./node-records.js";
import { pinned } from "./vm-pins.js";
import { type VmRecords, vmRecord } from "./vm-records.js";

const VMS = "vms/";

/** What {@link createInventoryMoves} works with. */
export interface InventoryMovesDeps {
  readonly store: KvStore;
  readonly clock: Clock;
  /** How long a move's pins hold (the heartbeat TTL). */
  readonly ttlMs: number;
  readonly vmRecords: VmRecords;
  readonly nodeRecords: NodeRecords;
}

/** Creates the inventory's {@link Inventory.moveVm}. */
export function createInventoryMoves(deps: InventoryMovesDeps): Pick<Inventory, "moveVm"> {
  const { store, clock, vmRecords, nodeRecords } = deps;
  const ttl = deps.ttlMs;
  let moves: Promise<unknown> = Promise.resolve();

  /** Moves a VM's placement and both nodes' lists in one transaction (see `moveVm`). */
  async function moveOnce(
    vm: VmInfo,
    fromId: string,
    toId: string,
    signal: AbortSignal | undefined,
    guards: readonly Compare[],
  ): Promise<void> {
    const from = nodeKey(fromId);
    const to = nodeKey(toId);
    return retryWhileLost(MAX_ATTEMPTS, async () => {
      const src = await getMessage(store, NodeRecordSchema, NODE_PREFIX + from, { signal });
      const dst = await getMessage(store, NodeRecordSchema, NODE_PREFIX + to, { signal });
      if (dst === undefined) throw new RpcError("NODE_NOT_FOUND");
      const fact = await getMessage(store, VmRecordSchema, VMS + vm.id, { signal });
      const prev = fact === undefined ? undefined : { rec: fact.message, rev: fact.modRevision };
      const record = vmRecord(vm.id, prev, { nodeId: to, awaitingReport: true });
      const placement = vmRecords.write(record, prev?.rev ?? 0);
      const moved = {
        ...vm,
        nodeId: create(NodeIdSchema, { id: dst.message.info?.id?.id ?? toId }),
      };
      const until = BigInt(clock.now() + ttl);
      const nextDst = pinned(
        withVms(dst.message, [
          ...(dst.message.health?.vms ?? []).filter((v) => v.id !== vm.id),
          moved,
        ]),
        create(VmPinSchema, { vm: moved, present: true, untilMs: until }),
      );
      const nextSrc =
        src === undefined
          ? undefined
          : pinned(
              withVms(
                src.message,
                (src.message.health?.vms ?? []).filter((v) => v.id !== vm.id),
              ),
              create(VmPinSchema, { vm, present: false, untilMs: until }),
            );
      const txn = await store.txn(
        {
          compares: [
            ...guards,
            placement.compare,
            { key: NODE_PREFIX + to, modRevision: dst.modRevision },
            ...(src === undefined
              ? []
              : [{ key: NODE_PREFIX + from, modRevision: src.modRevision }]),
          ],
          success: [
            placement.op,
            { type: "put", key: NODE_PREFIX + to, value: encodeMessage(NodeRecordSchema, nextDst) },
            ...(nextSrc === undefined
              ? []
              : [
                  {
                    type: "put" as const,
                    key: NODE_PREFIX + from,
                    value: encodeMessage(NodeRecordSchema, nextSrc),
                  },
                ]),
          ],
        },
        { signal },
      );
      if (txn.succeeded) {
        nodeRecords.remember(to, txn.revision, nextDst);
        if (nextSrc !== undefined) nodeRecords.remember(from, txn.revision, nextSrc);
        vmRecords.remember(record, txn.revision);
        return;
      }
      return LOST;
    });
  }
  return {
    moveVm(vm, fromId, toId, signal, guards = []) {
      // This process's moves go one at a time: a drain finishes many at once
      // off one node, and as rivals in the compare-and-swap below all but one
      // would retry, the last of n after n attempts. Other processes' writes
      // are still caught by the compare-and-swap.
      const run = moves.then(() => moveOnce(vm, fromId, toId, signal, guards));
      moves = run.catch(() => {});
      return run;
    },
  };
}
