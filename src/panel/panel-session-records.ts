// The stored records of panel sign-in sessions (`panel/sessions/<id>`): how
// one is read and judged live, ended (telling this process's listeners),
// a user's oldest dropped past the cap, and swept once past its absolute lifetime.

import type { Clock } from "../core/index.js";
import {
  type PanelSessionRecord,
  PanelSessionRecordSchema,
} from "../gen/debvisor/store/v1/panel_records_pb.js";
import {
  decodeMessage,
  encodeMessage,
  getMessage,
  type KvStore,
  LOST,
  rangeAll,
  retryWhileLost,
  type Versioned,
} from "../store/index.js";
import { userPrincipal } from "./panel-users.js";

const PREFIX = "panel/sessions/";
/** The shape of a session id (16 random bytes, base64url); nothing else is looked up. */
export const SID = /^[A-Za-z0-9_-]{22}$/;

/** The principal a session acts as. */
export function sessionPrincipal(r: { user: string; principal: string }): string {
  return r.principal === "" ? userPrincipal(r.user) : r.principal;
}

/** The session records in the store, as the session keeper uses them. */
export interface PanelSessionRecords {
  /** The store key of a session's record. */
  key(sid: string): string;
  /** A session's record and revision; undefined when there is none or `sid` is not an id. */
  read(sid: string): Promise<Versioned<PanelSessionRecord> | undefined>;
  /** Whether a record is of a live session: there, not revoked, not past its absolute lifetime. */
  live(r: PanelSessionRecord | undefined): boolean;
  /** Marks a session revoked with `reason` and tells the listeners; false if it was not there or already ended. */
  end(sid: string, reason: string): Promise<boolean>;
  /** Ends every live session of a user; returns how many. */
  endAllOf(user: string, reason: string): Promise<number>;
  /**
   * Keeps at most `max` records of `user`, `keep` (the session just started,
   * its record created at store revision `keptAt`) among them: ended and
   * expired records go first, then the oldest live sessions, each ended with
   * `reason` (its listeners told) before its record is deleted. A live
   * session created after `keep` is never ended here (a sign-in at the same
   * time ends this one if need be). Returns the ids of the live sessions it ended.
   */
  keepNewest(
    user: string,
    max: number,
    keep: string,
    keptAt: number,
    reason: string,
  ): Promise<string[]>;
  /** Called with the session id whenever this process ends a session. */
  onEnd(listener: (sessionId: string) => void): () => void;
  /** Deletes the records of sessions past their absolute lifetime; returns how many. */
  sweep(): Promise<number>;
}

/** Creates the records' keeper over `store`; `clock` judges lifetimes. */
export function createPanelSessionRecords(store: KvStore, clock: Clock): PanelSessionRecords {
  const listeners = new Set<(sid: string) => void>();
  const key = (sid: string) => `${PREFIX}${sid}`;
  const read = (sid: string) =>
    SID.test(sid)
      ? getMessage(store, PanelSessionRecordSchema, key(sid))
      : Promise.resolve(undefined);
  const live = (r: PanelSessionRecord | undefined) =>
    r !== undefined && !r.revoked && Number(r.expiresAtMs) > clock.now();

  async function end(sid: string, reason: string): Promise<boolean> {
    return retryWhileLost(
      10,
      async () => {
        const cur = await read(sid);
        if (cur === undefined || cur.message.revoked) return false;
        const next = { ...cur.message, revoked: true, revokedReason: reason };
        const r = await store.txn({
          compares: [{ key: key(sid), modRevision: cur.modRevision }],
          success: [
            { type: "put", key: key(sid), value: encodeMessage(PanelSessionRecordSchema, next) },
          ],
        });
        if (!r.succeeded) return LOST;
        for (const l of listeners) l(sid);
        return true;
      },
      () => {
        throw new Error(`session ${sid}: could not end it after repeated conflicts`);
      },
    );
  }

  return {
    key,
    read,
    live,
    end,
    async endAllOf(user, reason) {
      const mine: string[] = [];
      for await (const kv of rangeAll(store, PREFIX)) {
        const s = decodeMessage(PanelSessionRecordSchema, kv);
        if (s.user === user && live(s)) mine.push(s.sessionId);
      }
      let n = 0;
      for (const sid of mine) if (await end(sid, reason)) n++;
      return n;
    },
    async keepNewest(user, max, keep, keptAt, reason) {
      const others: { sid: string; key: string; live: boolean; createdAt: number }[] = [];
      for await (const kv of rangeAll(store, PREFIX)) {
        const s = decodeMessage(PanelSessionRecordSchema, kv);
        if (s.user === user && s.sessionId !== keep)
          others.push({
            sid: s.sessionId,
            key: kv.key,
            live: live(s),
            createdAt: kv.createRevision,
          });
      }
      // Ended ones first, then the oldest live ones, in the store's order (one for every
      // daemon, whatever their clocks). A live one newer than `keep` is another sign-in's
      // at the same time: it counts, but ending it is that sign-in's to decide (it sees
      // `keep` as older); ending it here too would end both.
      const gone = others
        .filter((o) => !o.live || o.createdAt < keptAt)
        .sort((a, b) => Number(a.live) - Number(b.live) || a.createdAt - b.createdAt);
      const ended: string[] = [];
      for (const o of gone.slice(0, Math.max(0, others.length - (max - 1)))) {
        if (o.live && (await end(o.sid, reason))) ended.push(o.sid);
        // Gone, its tokens are refused as of an unknown session: the store stays bounded.
        await store.delete(o.key);
      }
      return ended;
    },
    onEnd(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async sweep() {
      // Past its absolute lifetime a session refuses everything anyway, reuse checks included.
      const gone: { key: string; modRevision: number }[] = [];
      for await (const kv of rangeAll(store, PREFIX)) {
        const s = decodeMessage(PanelSessionRecordSchema, kv);
        if (Number(s.expiresAtMs) <= clock.now())
          gone.push({ key: kv.key, modRevision: kv.modRevision });
      }
      for (const g of gone)
        await store.txn({ compares: [g], success: [{ type: "delete", key: g.key }] });
      return gone.length;
    },
  };
}
