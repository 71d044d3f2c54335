// The API key registry: issuing, verifying, listing, revoking and rotating
// keys kept in the state store as hashes, and what this daemon's watch-fed
// copy tells of them. The records themselves are read and written through
// api-key-records.ts.
import { timingSafeEqual } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { type Clock, createRecencyMap, type Logger, RpcError } from "../core/index.js";
import { type ApiKeyRecord, ApiKeyRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import {
  decodeMessage,
  getMessage,
  type KvStore,
  mirrorPrefix,
  type PrefixMirror,
  rangeAll,
} from "../store/index.js";
import { API_KEYS_PREFIX, createApiKeyRecords, sha256 } from "./api-key-records.js";

/** API keys look like `dvk_<16 hex id>_<43 base64url secret>`: 256 random bits, recognisable in leaks. */
const TOKEN = /^dvk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
/** last_used_at is written at most this often per key, so reads stay reads. */
const LAST_USED_EVERY_MS = 60_000;
/** Keys whose last write of last_used_at is remembered; the least recently used are forgotten. */
const LAST_WRITTEN_REMEMBERED = 100_000;

/** The id (the public part) of a token shaped like an API key, else undefined. */
export function apiKeyIdOf(token: string): string | undefined {
  return TOKEN.exec(token)?.[1];
}

/** A newly made key: the record, and the token, shown once and never again. */
export interface IssuedApiKey {
  readonly record: ApiKeyRecord;
  readonly token: string;
}

/** What to put in a new key. */
export interface NewApiKey {
  readonly principal: string;
  readonly roles: readonly string[];
  readonly tenant?: string;
  /** 0 or undefined: never expires. */
  readonly ttlMs?: number;
  readonly description?: string;
  readonly createdBy: string;
}

/** Why a token did not authenticate (for logs and audit only). */
export type ApiKeyFailure = "malformed" | "unknown" | "revoked" | "expired" | "secret mismatch";

/** API keys kept in the state store as hashes. */
export interface ApiKeys {
  create(key: NewApiKey, signal?: AbortSignal): Promise<IssuedApiKey>;
  /** The key's record when `token` is a live key, else the reason it is not. */
  verify(
    token: string,
    signal?: AbortSignal,
  ): Promise<{ record: ApiKeyRecord } | { failure: ApiKeyFailure }>;
  get(id: string, signal?: AbortSignal): Promise<ApiKeyRecord | undefined>;
  list(principal: string | undefined, signal?: AbortSignal): Promise<ApiKeyRecord[]>;
  revoke(id: string, signal?: AbortSignal): Promise<ApiKeyRecord>;
  /** Issues a successor with the same principal, roles and tenant; the old key works for `graceMs` more. */
  rotate(
    id: string,
    graceMs: number,
    createdBy: string,
    signal?: AbortSignal,
  ): Promise<IssuedApiKey>;
  /** Whether this daemon's watch-fed copy holds the key (keys from loadApiKeys; else false). */
  inCopy(id: string): boolean;
  /**
   * Why a key that authenticated no longer would, as this daemon's copy
   * shows it now ("revoked", "expired", "unknown" once removed); undefined
   * while it still would, or when there is no copy to tell.
   */
  failureInCopy(id: string): ApiKeyFailure | undefined;
  /** The key's expiry as the copy holds it now (epoch ms); undefined when none or not held. */
  expiryInCopy(id: string): number | undefined;
  /** Tells `listener` of every change of the copy (keys from loadApiKeys; else never). */
  onChange(listener: () => void): () => void;
  /** Stops following the store (keys from loadApiKeys). */
  close(): void;
}

/**
 * The API key registry with every record served from a watch-fed copy of
 * `apikeys/`: authenticating takes no store round trip. A key the copy does
 * not hold yet (made by another daemon a moment ago), or any key while the
 * copy is stale (see API_KEY_MIRROR_MAX_STALE_MS), is read from the store.
 * Create, revoke and rotate return once this daemon's copy shows the change.
 */
export async function loadApiKeys(store: KvStore, clock: Clock, logger: Logger): Promise<ApiKeys> {
  const mirror = await mirrorPrefix(
    store,
    API_KEYS_PREFIX,
    (kv) => decodeMessage(ApiKeyRecordSchema, kv),
    logger,
  );
  return createApiKeys(store, clock, mirror);
}

/** Creates the API key registry over a store; with `mirror`, lookups are served from it. */
export function createApiKeys(
  store: KvStore,
  clock: Clock,
  mirror?: PrefixMirror<ApiKeyRecord>,
): ApiKeys {
  const lastWritten = createRecencyMap<string, number>(LAST_WRITTEN_REMEMBERED);
  const { lookup, caughtUp, update, issue } = createApiKeyRecords(store, clock, mirror);

  async function revoke(id: string, signal?: AbortSignal): Promise<ApiKeyRecord> {
    const revoked = await update(
      id,
      (r) =>
        r.revokedAtMs !== 0n
          ? r
          : create(ApiKeyRecordSchema, { ...r, revokedAtMs: BigInt(clock.now()) }),
      signal,
    );
    await caughtUp(id, (r) => r.revokedAtMs !== 0n);
    return revoked;
  }

  return {
    create: (key, signal) => issue(key, signal),
    async verify(token, signal) {
      const m = TOKEN.exec(token);
      if (m === null) return { failure: "malformed" };
      const [, id, secret] = m as unknown as [string, string, string];
      const record = await lookup(id, signal);
      // Hash even when the key is unknown so timing does not tell ids apart.
      const presented = sha256(secret);
      if (record === undefined) return { failure: "unknown" };
      if (!timingSafeEqual(presented, Buffer.from(record.secretSha256)))
        return { failure: "secret mismatch" };
      const now = clock.now();
      const dead = deadKey(record, now);
      if (dead !== undefined) return { failure: dead };
      if (now - (lastWritten.get(id) ?? Number(record.lastUsedAtMs)) >= LAST_USED_EVERY_MS) {
        lastWritten.touch(id, now);
        void update(id, (r) =>
          create(ApiKeyRecordSchema, { ...r, lastUsedAtMs: BigInt(now) }),
        ).catch(() => {});
      }
      return { record };
    },
    async get(id, signal) {
      if (!/^[0-9a-f]{16}$/.test(id)) return undefined;
      return (await getMessage(store, ApiKeyRecordSchema, API_KEYS_PREFIX + id, { signal }))
        ?.message;
    },
    async list(principal, signal) {
      const out: ApiKeyRecord[] = [];
      for await (const kv of rangeAll(store, API_KEYS_PREFIX, { signal })) {
        const r = decodeMessage(ApiKeyRecordSchema, kv);
        if (principal === undefined || r.principal === principal) out.push(r);
      }
      return out;
    },
    inCopy: (id) => mirror?.values().has(id) ?? false,
    failureInCopy(id) {
      if (mirror === undefined) return undefined;
      const r = mirror.values().get(id);
      return r === undefined ? "unknown" : deadKey(r, clock.now());
    },
    expiryInCopy(id) {
      const at = mirror?.values().get(id)?.expiresAtMs ?? 0n;
      return at === 0n ? undefined : Number(at);
    },
    onChange: (listener) => mirror?.onChange(() => listener()) ?? (() => {}),
    close: () => mirror?.close(),
    revoke,
    async rotate(id, graceMs, createdBy, signal) {
      const old = await getMessage(store, ApiKeyRecordSchema, API_KEYS_PREFIX + id, { signal });
      if (old === undefined) throw new RpcError("APIKEY_NOT_FOUND");
      const o = old.message;
      // A dead key must not be brought back to life by rotating it.
      const dead = deadKey(o, clock.now());
      if (dead !== undefined)
        throw new RpcError(dead === "revoked" ? "APIKEY_REVOKED" : "APIKEY_EXPIRED");
      const remaining = o.expiresAtMs === 0n ? 0 : Number(o.expiresAtMs) - clock.now();
      const issued = await issue(
        {
          principal: o.principal,
          roles: o.roles,
          tenant: o.tenant || undefined,
          ttlMs: o.expiresAtMs === 0n ? 0 : Math.max(remaining, graceMs),
          createdBy,
        },
        signal,
        id,
      );
      const graceEnd = BigInt(clock.now() + graceMs);
      const replaced = await update(
        id,
        (r) =>
          r.revokedAtMs !== 0n
            ? r
            : create(ApiKeyRecordSchema, {
                ...r,
                replacedBy: issued.record.id,
                expiresAtMs:
                  r.expiresAtMs !== 0n && r.expiresAtMs < graceEnd ? r.expiresAtMs : graceEnd,
              }),
        signal,
      );
      if (replaced.revokedAtMs !== 0n) {
        // Revoked while its successor was being made: the successor must not outlive it.
        await revoke(issued.record.id, signal);
        throw new RpcError("APIKEY_REVOKED");
      }
      await caughtUp(id, (r) => r.expiresAtMs === replaced.expiresAtMs);
      return issued;
    },
  };
}

/** Why `record` no longer authenticates at `now` (revoked, or past its expiry), else undefined. */
function deadKey(record: ApiKeyRecord, now: number): "revoked" | "expired" | undefined {
  if (record.revokedAtMs !== 0n) return "revoked";
  if (record.expiresAtMs !== 0n && BigInt(now) >= record.expiresAtMs) return "expired";
  return undefined;
}
