// API key records as kept in the state store under `apikeys/`, and this
// daemon's watch-fed copy of them: reading a record (from the copy when it
// can be trusted), writing one by compare-and-swap, and waiting for the copy
// to show a write made here. The registry in api-keys.ts is built on these.
import { createHash, randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { type Clock, RpcError } from "../core/index.js";
import { type ApiKeyRecord, ApiKeyRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import {
  encodeMessage,
  getMessage,
  type KvStore,
  LOST,
  type PrefixMirror,
  retryWhileLost,
} from "../store/index.js";
import type { IssuedApiKey, NewApiKey } from "./api-keys.js";

/** Where API key records live in the state store. */
export const API_KEYS_PREFIX = "apikeys/";
/**
 * A copy whose watch has been broken this long is no longer trusted: keys are
 * then read from the store, so a revocation made through another daemon is
 * never honoured for longer than this after the copy stopped following.
 */
export const API_KEY_MIRROR_MAX_STALE_MS = 10_000;
/** How long a change made here waits for this daemon's copy to show it. */
const MIRROR_CATCH_UP_MS = 2000;

/** Reads and writes of API key records, over the store and (when given) this daemon's copy. */
export interface ApiKeyRecords {
  /** The record to authenticate with: from the copy when it is fresh and holds the key. */
  lookup(id: string, signal?: AbortSignal): Promise<ApiKeyRecord | undefined>;
  /** Resolves once the copy's record of `id` satisfies `shows`, or after MIRROR_CATCH_UP_MS. */
  caughtUp(id: string, shows: (r: ApiKeyRecord) => boolean): Promise<void>;
  /** Writes `change` of the stored record by compare-and-swap (8 tries, then CONFLICT); APIKEY_NOT_FOUND when none. */
  update(
    id: string,
    change: (r: ApiKeyRecord) => ApiKeyRecord,
    signal?: AbortSignal,
  ): Promise<ApiKeyRecord>;
  /** Makes and stores a new key (`replaces`: the id it is rotated from), once the copy shows it. */
  issue(key: NewApiKey, signal?: AbortSignal, replaces?: string): Promise<IssuedApiKey>;
}

/** The SHA-256 of `text`: how a key's secret is kept and compared. */
export function sha256(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}

/** Reads and writes API key records in `store`; with `mirror`, lookups are served from it. */
export function createApiKeyRecords(
  store: KvStore,
  clock: Clock,
  mirror?: PrefixMirror<ApiKeyRecord>,
): ApiKeyRecords {
  async function lookup(id: string, signal?: AbortSignal): Promise<ApiKeyRecord | undefined> {
    const stale = mirror?.staleSince();
    const copied =
      stale === undefined || Date.now() - stale < API_KEY_MIRROR_MAX_STALE_MS
        ? mirror?.values().get(id)
        : undefined;
    if (copied !== undefined) return copied;
    return (await getMessage(store, ApiKeyRecordSchema, API_KEYS_PREFIX + id, { signal }))?.message;
  }

  function caughtUp(id: string, shows: (r: ApiKeyRecord) => boolean): Promise<void> {
    const m = mirror;
    if (m === undefined) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => {
        const r = m.values().get(id);
        if (r === undefined || !shows(r)) return;
        done();
      };
      const done = () => {
        clearTimeout(timer);
        stop();
        resolve();
      };
      const timer = setTimeout(done, MIRROR_CATCH_UP_MS);
      const stop = m.onChange(check);
      check();
    });
  }

  async function update(
    id: string,
    change: (r: ApiKeyRecord) => ApiKeyRecord,
    signal?: AbortSignal,
  ): Promise<ApiKeyRecord> {
    return retryWhileLost(8, async () => {
      const current = await getMessage(store, ApiKeyRecordSchema, API_KEYS_PREFIX + id, {
        signal,
      });
      if (current === undefined) throw new RpcError("APIKEY_NOT_FOUND");
      const next = change(current.message);
      const r = await store.txn(
        {
          compares: [{ key: API_KEYS_PREFIX + id, modRevision: current.modRevision }],
          success: [
            {
              type: "put",
              key: API_KEYS_PREFIX + id,
              value: encodeMessage(ApiKeyRecordSchema, next),
            },
          ],
        },
        { signal },
      );
      return r.succeeded ? next : LOST;
    });
  }

  async function issue(
    key: NewApiKey,
    signal?: AbortSignal,
    replaces?: string,
  ): Promise<IssuedApiKey> {
    const id = randomBytes(8).toString("hex");
    const secret = randomBytes(32).toString("base64url");
    const now = clock.now();
    const record = create(ApiKeyRecordSchema, {
      id,
      principal: key.principal,
      secretSha256: sha256(secret),
      roles: [...key.roles],
      tenant: key.tenant ?? "",
      createdAtMs: BigInt(now),
      expiresAtMs: BigInt(key.ttlMs ? now + key.ttlMs : 0),
      createdBy: key.createdBy,
      description: key.description ?? (replaces === undefined ? "" : `rotated from ${replaces}`),
    });
    const r = await store.txn(
      {
        compares: [{ key: API_KEYS_PREFIX + id, modRevision: 0 }],
        success: [
          {
            type: "put",
            key: API_KEYS_PREFIX + id,
            value: encodeMessage(ApiKeyRecordSchema, record),
          },
        ],
      },
      { signal },
    );
    if (!r.succeeded) throw new RpcError("CONFLICT");
    await caughtUp(id, () => true);
    return { record, token: `dvk_${id}_${secret}` };
  }

  return { lookup, caughtUp, update, issue };
}
