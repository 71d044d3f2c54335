/**
 * The claim of an operation by one control-plane process: a compare-and-swap
 * of its record to DELIVERED by this process, so of several processes
 * sharing a store only one runs it.
 */
import { create } from "@bufbuild/protobuf";
import type { Clock } from "../core/index.js";
import {
  OperationPhase,
  type OperationRecord,
  OperationRecordSchema,
} from "../gen/debvisor/store/v1/agent_records_pb.js";
import { type KvStore, updateMessage } from "../store/index.js";
import { operationKey } from "./agent-operations.js";

/** Dependencies of {@link createLocalOperationClaim}. */
export interface LocalOperationClaimDeps {
  readonly store: KvStore;
  readonly clock: Clock;
  /** This process, as recorded on the operations it claims. */
  readonly runnerId: string;
  readonly signal: AbortSignal;
}

/**
 * Claims an operation for this process: a PENDING one, or (`from`) one
 * still claimed by that dead process. True when this process is to run it.
 */
export type LocalOperationClaim = (record: OperationRecord, from?: string) => Promise<boolean>;

/** Makes the {@link LocalOperationClaim} of this process. */
export function createLocalOperationClaim(deps: LocalOperationClaimDeps): LocalOperationClaim {
  const { store, clock, signal } = deps;
  return async function claim(record: OperationRecord, from?: string): Promise<boolean> {
    const id = record.dispatch?.operationId ?? "";
    const { written } = await updateMessage(
      store,
      OperationRecordSchema,
      operationKey(record.nodeId, id),
      (current) => {
        if (current === undefined) return undefined;
        const open =
          from === undefined
            ? current.phase === OperationPhase.PENDING
            : current.deliveredBy === from &&
              (current.phase === OperationPhase.DELIVERED ||
                current.phase === OperationPhase.RUNNING);
        if (!open) return undefined;
        return create(OperationRecordSchema, {
          ...current,
          phase: OperationPhase.DELIVERED,
          deliveries: current.deliveries + 1,
          deliveredBy: deps.runnerId,
          updatedAtMs: BigInt(clock.now()),
        });
      },
      { signal },
    );
    return written;
  };
}
