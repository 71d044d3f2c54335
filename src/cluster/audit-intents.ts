/**
 * Acts of the failover controller owed to the audit trail, told at least
 * once: a stale copy's removal (a forced stop and undefine of a VM's copy).
 * The act's intent is written (`audit-intents/<id>`) in the transaction that
 * lets the act go ahead; once the act's outcome is known it is told, and the
 * intent is deleted only after the trail took the record. A tell that failed
 * writes the outcome into the intent.
 *
 * An intent left is told by the elected controller's pass (one process), not
 * awaited by it: at once when its runner is gone, told with the outcome it
 * recorded or, with none, as "unknown" (the controller died between the act
 * and its record); its own when older than an act takes (`actBoundMs`); a
 * living runner's (a controller that lost the election) once that runner
 * has had time to tell it too. A tell that failed is tried again after 2,
 * 4, ... up to 64 passes. A process without a trail writes no intents and
 * tells none (it would delete them untold). A tell whose intent could not be
 * deleted is told again: a duplicate, never a loss.
 */
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { type Clock, type Logger, within } from "../core/index.js";
import {
  type AuditIntent,
  AuditIntentSchema,
  type StaleCopyRemovalIntent,
} from "../gen/debvisor/store/v1/records_pb.js";
import {
  decodeMessage,
  encodeMessage,
  type KvStore,
  rangeAll,
  type TxnOp,
  updateMessage,
} from "../store/index.js";
import { askOnce, type RunnerRegistry } from "./runner-registry.js";
import type { StaleCopyDecision } from "./stale-copy-removal.js";

/** Where intents are kept. */
export const AUDIT_INTENTS = "audit-intents/";
/** A tell not answered by then counts as refused. */
const TELL_TIMEOUT_MS = 60_000;
/** The most passes a tell refused again and again waits before it is tried again. */
const MAX_BACKOFF_PASSES = 64;

/** A stale copy's removal as its intent names it. */
export type StaleCopyRemovalAct = Omit<StaleCopyDecision, "action" | "detail">;

/** What {@link createAuditIntents} works with. */
export interface AuditIntentsOptions {
  readonly store: KvStore;
  readonly clock: Clock;
  readonly logger: Logger;
  /** This process's runner id, and whether another's process is alive. */
  readonly runners: Pick<RunnerRegistry, "id" | "isAlive">;
  /** Tells a removal's outcome to the trail; resolves once the trail took it. */
  readonly tellStaleCopy: (d: StaleCopyDecision) => Promise<void> | void;
  /** The longest one act takes before its outcome is known (a removal's bound, with slack). */
  readonly actBoundMs: number;
  /** A tell not answered within this counts as refused (default 60 s). */
  readonly tellTimeoutMs?: number;
}

/** The intents of one process's acts, and the pass telling those left. */
export interface AuditIntents {
  /** A new intent for the act: the write for the transaction that lets it go ahead, and its key. */
  intend(act: StaleCopyRemovalAct): { readonly key: string; readonly op: TxnOp };
  /**
   * Deletes intent `key` once `telling` (the outcome told by the actor)
   * resolved; else writes `outcome` into it, for a pass. Never rejects.
   */
  told(key: string, telling: Promise<void>, outcome: StaleCopyDecision): Promise<void>;
  /** Tells the intents left (the elected controller's pass); does not wait for the tells. */
  tellLeft(signal: AbortSignal): Promise<void>;
}

/** Creates the {@link AuditIntents} of a failover controller. */
export function createAuditIntents(options: AuditIntentsOptions): AuditIntents {
  const { store, clock, logger, runners, actBoundMs } = options;
  const tellTimeoutMs = options.tellTimeoutMs ?? TELL_TIMEOUT_MS;
  /** Intents whose tell is under way here: not told again meanwhile. */
  const telling = new Set<string>();
  /** Intents whose tell failed here: passes each still waits, doubling per failure. */
  const backoff = new Map<string, { failures: number; wait: number }>();

  const bounded = (p: Promise<void>) =>
    within(p, tellTimeoutMs, `the audit trail did not take it within ${tellTimeoutMs / 1000} s`);

  function failed(key: string, err: unknown) {
    const failures = (backoff.get(key)?.failures ?? 0) + 1;
    backoff.set(key, { failures, wait: Math.min(2 ** failures, MAX_BACKOFF_PASSES) });
    logger.error({ err, intent: key, failures }, "control plane's act not audited; told again");
  }

  async function told(key: string, tellingIt: Promise<void>, outcome: StaleCopyDecision) {
    telling.add(key);
    try {
      await bounded(tellingIt);
      backoff.delete(key);
      await store.delete(key).catch((err: unknown) => {
        // Told, still there: a pass tells it again (a duplicate, never a loss).
        logger.warn({ err, intent: key }, "control plane's act told, its intent not deleted");
      });
    } catch (err) {
      failed(key, err);
      // What the act did, for the pass that tells it again (else told "unknown").
      await updateMessage(store, AuditIntentSchema, key, (cur) =>
        cur === undefined
          ? undefined
          : create(AuditIntentSchema, { ...cur, outcome: outcome.action, detail: outcome.detail }),
      ).catch((e: unknown) => logger.warn({ err: e, intent: key }, "act's outcome not kept"));
    } finally {
      telling.delete(key);
    }
  }

  /** Tells an intent left, read at `revision`, and deletes it unless it changed since. */
  async function tellOne(key: string, intent: AuditIntent, revision: number) {
    const decision = decisionOf(intent);
    if (decision === undefined) return; // an act of a newer version: left to it
    telling.add(key);
    try {
      await bounded((async () => options.tellStaleCopy(decision))());
      backoff.delete(key);
      await store.txn({
        compares: [{ key, modRevision: revision }],
        success: [{ type: "delete", key }],
      });
    } catch (err) {
      failed(key, err);
    } finally {
      telling.delete(key);
    }
  }

  return {
    intend(act) {
      const key = `${AUDIT_INTENTS}${randomUUID()}`;
      const intent = create(AuditIntentSchema, {
        runner: runners.id,
        createdMs: BigInt(clock.now()),
        act: { case: "staleCopyRemoval", value: removalOf(act) },
      });
      return { key, op: { type: "put", key, value: encodeMessage(AuditIntentSchema, intent) } };
    },
    told: (key, tellingIt, outcome) => told(key, tellingIt, outcome),
    async tellLeft(signal) {
      const now = clock.now();
      const alive = askOnce(runners, signal);
      const present = new Set<string>();
      for await (const kv of rangeAll(store, AUDIT_INTENTS, { signal })) {
        present.add(kv.key);
        if (telling.has(kv.key)) continue;
        const intent = decodeMessage(AuditIntentSchema, kv);
        const age = now - Number(intent.createdMs);
        // Its runner tells it, while it may still be acting or telling (a process that
        // lost the election included: it finishes what it started).
        const wait =
          intent.runner === runners.id
            ? actBoundMs
            : (await alive(intent.runner))
              ? actBoundMs + tellTimeoutMs
              : 0;
        if (age < wait) continue;
        const waiting = backoff.get(kv.key);
        if (waiting !== undefined && waiting.wait-- > 0) continue;
        void tellOne(kv.key, intent, kv.modRevision);
      }
      for (const key of backoff.keys()) if (!present.has(key)) backoff.delete(key);
    },
  };
}

function removalOf(act: StaleCopyRemovalAct): StaleCopyRemovalIntent {
  return {
    $typeName: "debvisor.store.v1.StaleCopyRemovalIntent",
    vmId: act.vmId,
    nodeId: act.node,
    placedOn: act.placedOn,
    generation: act.generation,
    tenant: act.tenant,
  };
}

/** The decision an intent left tells: its recorded outcome, or "unknown". */
function decisionOf(intent: AuditIntent): StaleCopyDecision | undefined {
  if (intent.act.case !== "staleCopyRemoval") return undefined;
  const r = intent.act.value;
  const act = {
    vmId: r.vmId,
    node: r.nodeId,
    placedOn: r.placedOn,
    generation: r.generation,
    tenant: r.tenant,
  };
  if (intent.outcome === "removed" || intent.outcome === "failed")
    return { ...act, action: intent.outcome, detail: intent.detail };
  return {
    ...act,
    action: "unknown",
    detail: `removal of the stale copy on ${r.nodeId} sent by control-plane process ${intent.runner}, which stopped before telling its outcome; while the copy is there, the vm shows a conflict`,
  };
}
