/**
 * Acts of the failover controller owed to the audit trail, told at least
 * once: a stale copy's removal (a forced stop and undefine of a VM's copy)
 * and an HA VM's start on the node that stopped it (audit-intent-acts.ts).
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
import { type AuditIntent, AuditIntentSchema } from "../gen/debvisor/store/v1/records_pb.js";
import {
  decodeMessage,
  encodeMessage,
  type KvStore,
  rangeAll,
  type TxnOp,
  updateMessage,
} from "../store/index.js";
import {
  type ActOutcome,
  type ActTellers,
  canTell,
  type IntendedAct,
  storedAct,
  tellerOf,
} from "./audit-intent-acts.js";
import { askOnce, type RunnerRegistry } from "./runner-registry.js";

/** Where intents are kept. */
export const AUDIT_INTENTS = "audit-intents/";

/**
 * The act's id in the audit trail (its records' `request_id`): its intent's,
 * the same in a tell and a tell again, so a duplicate reads as one.
 */
export const actIdOf = (key: string): string => key.slice(AUDIT_INTENTS.length);
/** A tell not answered by then counts as refused. */
const TELL_TIMEOUT_MS = 60_000;
/** The most passes a tell refused again and again waits before it is tried again. */
const MAX_BACKOFF_PASSES = 64;
/** Tells of intents left under way at once (a trail back after an outage finds many). */
const MAX_TELLING = 32;

/** What {@link createAuditIntents} works with: where each kind of act is told (to the trail only). */
export interface AuditIntentsOptions extends ActTellers {
  readonly store: KvStore;
  readonly clock: Clock;
  readonly logger: Logger;
  /** This process's runner id, and whether another's process is alive. */
  readonly runners: Pick<RunnerRegistry, "id" | "isAlive">;
  /** The longest one act takes before its outcome is known (a removal's bound, with slack). */
  readonly actBoundMs: number;
  /** A tell not answered within this counts as refused (default 60 s). */
  readonly tellTimeoutMs?: number;
}

/** The intents of one process's acts, and the pass telling those left. */
export interface AuditIntents {
  /**
   * A new intent for the act: the write for the transaction that lets it go
   * ahead, and its key; undefined when there is nowhere to tell its kind.
   */
  intend(act: IntendedAct): { readonly key: string; readonly op: TxnOp } | undefined;
  /**
   * Deletes intent `key` once `telling` (the outcome told by the actor)
   * resolved; else writes `outcome` into it, for a pass. A `telling` that
   * resolves `false` was not told (a decision repeated): the intent is left
   * with `outcome`, for this process's next pass to tell. Never rejects.
   */
  told(key: string, telling: Promise<unknown>, outcome: ActOutcome): Promise<void>;
  /** Tells the intents left (the elected controller's pass); does not wait for the tells. */
  tellLeft(signal: AbortSignal): Promise<void>;
}

/** Creates the {@link AuditIntents} of a failover controller. */
export function createAuditIntents(options: AuditIntentsOptions): AuditIntents {
  const { store, clock, logger, runners } = options;
  const tellTimeoutMs = options.tellTimeoutMs ?? TELL_TIMEOUT_MS;
  /** Intents whose tell is under way here: not told again meanwhile. */
  const telling = new Set<string>();
  /** Intents whose tell failed here: passes each still waits, doubling per failure. */
  const backoff = new Map<string, { failures: number; wait: number }>();
  /** Outcomes of this process's acts it knows: a pass tells these, not "unknown". */
  const known = new Map<string, ActOutcome>();
  /**
   * When this process wrote or first listed each intent, by its own clock:
   * how long it has waited is never read from another process's clock.
   */
  const firstSeen = new Map<string, number>();
  /** Intents that could not be read (logged once each). */
  const unreadable = new Set<string>();

  const bounded = <T>(p: Promise<T>) =>
    within(p, tellTimeoutMs, `the audit trail did not take it within ${tellTimeoutMs / 1000} s`);

  function failed(key: string, err: unknown) {
    const failures = (backoff.get(key)?.failures ?? 0) + 1;
    backoff.set(key, { failures, wait: Math.min(2 ** failures, MAX_BACKOFF_PASSES) });
    logger.error({ err, intent: key, failures }, "control plane's act not audited; told again");
  }

  /** Deletes intent `key` (told), if still at `revision` when one is given. */
  async function forget(key: string, revision?: number) {
    await store.txn({
      compares: revision === undefined ? [] : [{ key, modRevision: revision }],
      success: [{ type: "delete", key }],
    });
    known.delete(key);
  }

  /** Writes `outcome` into intent `key` (known here), for a pass that tells it. */
  async function keep(key: string, outcome: ActOutcome) {
    known.set(key, outcome);
    await updateMessage(store, AuditIntentSchema, key, (cur) =>
      cur === undefined
        ? undefined
        : create(AuditIntentSchema, { ...cur, outcome: outcome.action, detail: outcome.detail }),
    ).catch((e: unknown) => logger.warn({ err: e, intent: key }, "act's outcome not kept"));
  }

  /** Deletes a tell's intent taken after its timeout; a pass's only if unchanged since read. */
  const tookLate = (key: string, revision?: number) => () =>
    void forget(key, revision)
      .then(() => backoff.delete(key))
      .catch(() => {});

  async function told(key: string, tellingIt: Promise<unknown>, outcome: ActOutcome) {
    telling.add(key);
    known.set(key, outcome);
    let late: (() => void) | undefined;
    try {
      if ((await bounded(tellingIt)) === false) {
        // Not told (a repeat of the decision before it): this process's next pass tells it.
        await keep(key, outcome);
        firstSeen.set(key, clock.now() - options.actBoundMs);
        return;
      }
      backoff.delete(key);
      await forget(key).catch((err: unknown) => {
        // Told, still there: a pass tells it again, as it was (a duplicate, never a loss).
        logger.warn({ err, intent: key }, "control plane's act told, its intent not deleted");
      });
    } catch (err) {
      failed(key, err);
      late = tookLate(key);
      // What the act did, for another process's pass should this one stop.
      await keep(key, outcome);
    } finally {
      release(telling, key, tellingIt, late);
    }
  }

  /** Tells an intent left (`tell`), read at `revision`, and deletes it unless it changed since. */
  async function tellOne(key: string, revision: number, tell: () => unknown) {
    telling.add(key);
    const tellingIt = (async () => void (await tell()))();
    let late: (() => void) | undefined;
    try {
      await bounded(tellingIt);
      backoff.delete(key);
      await forget(key, revision);
    } catch (err) {
      failed(key, err);
      late = tookLate(key, revision);
    } finally {
      release(telling, key, tellingIt, late);
    }
  }

  async function tellLeft(signal: AbortSignal) {
    const now = clock.now();
    const alive = askOnce(runners, signal);
    const present = new Set<string>();
    for await (const kv of rangeAll(store, AUDIT_INTENTS, { signal })) {
      const { key } = kv;
      present.add(key);
      if (!firstSeen.has(key)) firstSeen.set(key, now);
      if (telling.has(key) || telling.size >= MAX_TELLING) continue;
      let intent: AuditIntent;
      try {
        intent = decodeMessage(AuditIntentSchema, kv);
      } catch (err) {
        if (!unreadable.has(key)) logger.error({ err, intent: key }, "audit intent unreadable");
        unreadable.add(key);
        continue;
      }
      // One nothing here can tell (no trail for its kind, a newer version's kind) is
      // left: deleted untold, it would be lost.
      const tell = tellerOf(intent, options, actIdOf(key), known.get(key));
      if (tell === undefined) continue;
      if (
        now - (firstSeen.get(key) ?? now) <
        (await waitFor(intent.runner, runners.id, alive, options.actBoundMs, tellTimeoutMs))
      )
        continue;
      const waiting = backoff.get(key);
      if (waiting !== undefined && waiting.wait-- > 0) continue;
      void tellOne(key, kv.modRevision, tell);
    }
    for (const seen of [backoff, known, firstSeen])
      for (const key of seen.keys()) if (!present.has(key)) seen.delete(key);
    for (const key of unreadable) if (!present.has(key)) unreadable.delete(key);
  }

  return {
    intend(act) {
      if (!canTell(act, options)) return undefined;
      const key = `${AUDIT_INTENTS}${randomUUID()}`;
      const intent = create(AuditIntentSchema, {
        runner: runners.id,
        createdMs: BigInt(clock.now()),
        act: storedAct(act),
      });
      firstSeen.set(key, clock.now());
      return { key, op: { type: "put", key, value: encodeMessage(AuditIntentSchema, intent) } };
    },
    told: (key, tellingIt, outcome) => told(key, tellingIt, outcome),
    // Never rejects: a store error here must not stop the pass's removals.
    tellLeft: (signal) =>
      tellLeft(signal).catch((err: unknown) =>
        logger.warn({ err }, "audit intents not looked at; next pass"),
      ),
  };
}

/**
 * Frees `key`'s place in `telling` once `tellingIt` has settled, not when it
 * timed out: a tell the trail has not answered is not told again meanwhile
 * (a stalled trail would write every one of them once it moves). One taken
 * after it failed (timed out) calls `late`.
 */
function release(
  telling: Set<string>,
  key: string,
  tellingIt: Promise<unknown>,
  late: (() => void) | undefined,
) {
  const free = () => telling.delete(key);
  void tellingIt.then((told) => {
    free();
    if (told !== false) late?.();
  }, free);
}

/**
 * How long an intent of `runner` is left to it, from when this process first
 * saw it: its runner tells it while it may still be acting or telling (one
 * that lost the election included: it finishes what it started); a runner
 * gone, nothing more comes.
 */
async function waitFor(
  runner: string,
  self: string,
  alive: (r: string) => Promise<boolean>,
  actBoundMs: number,
  tellTimeoutMs: number,
): Promise<number> {
  if (runner === self) return actBoundMs;
  return (await alive(runner)) ? actBoundMs + tellTimeoutMs : 0;
}
