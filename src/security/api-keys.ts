import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { type Clock, RpcError } from "../core/index.js";
import { type ApiKeyRecord, ApiKeyRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import {
  decodeMessage,
  encodeMessage,
  getMessage,
  type KvStore,
  rangeAll,
} from "../store/index.js";

/** API keys look like `dvk_<16 hex id>_<43 base64url secret>`: 256 random bits, recognisable in leaks. */
const TOKEN = /^dvk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
const PREFIX = "apikeys/";
/** last_used_at is written at most this often per key, so reads stay reads. */
const LAST_USED_EVERY_MS = 60_000;

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
}

/** Creates the API key registry over a store. */
export function createApiKeys(store: KvStore, clock: Clock): ApiKeys {
  const lastWritten = new Map<string, number>();

  async function update(
    id: string,
    change: (r: ApiKeyRecord) => ApiKeyRecord,
    signal?: AbortSignal,
  ): Promise<ApiKeyRecord> {
    for (let attempt = 0; attempt < 8; attempt++) {
      const current = await getMessage(store, ApiKeyRecordSchema, PREFIX + id, { signal });
      if (current === undefined) throw new RpcError("APIKEY_NOT_FOUND");
      const next = change(current.message);
      const r = await store.txn(
        {
          compares: [{ key: PREFIX + id, modRevision: current.modRevision }],
          success: [
            { type: "put", key: PREFIX + id, value: encodeMessage(ApiKeyRecordSchema, next) },
          ],
        },
        { signal },
      );
      if (r.succeeded) return next;
    }
    throw new RpcError("CONFLICT");
  }

  async function create_(
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
        compares: [{ key: PREFIX + id, modRevision: 0 }],
        success: [
          { type: "put", key: PREFIX + id, value: encodeMessage(ApiKeyRecordSchema, record) },
        ],
      },
      { signal },
    );
    if (!r.succeeded) throw new RpcError("CONFLICT");
    return { record, token: `dvk_${id}_${secret}` };
  }

  return {
    create: (key, signal) => create_(key, signal),
    async verify(token, signal) {
      const m = TOKEN.exec(token);
      if (m === null) return { failure: "malformed" };
      const [, id, secret] = m as unknown as [string, string, string];
      const found = await getMessage(store, ApiKeyRecordSchema, PREFIX + id, { signal });
      // Hash even when the key is unknown so timing does not tell ids apart.
      const presented = sha256(secret);
      if (found === undefined) return { failure: "unknown" };
      const record = found.message;
      if (!timingSafeEqual(presented, Buffer.from(record.secretSha256)))
        return { failure: "secret mismatch" };
      const now = clock.now();
      if (record.revokedAtMs !== 0n) return { failure: "revoked" };
      if (record.expiresAtMs !== 0n && BigInt(now) >= record.expiresAtMs)
        return { failure: "expired" };
      if (now - (lastWritten.get(id) ?? Number(record.lastUsedAtMs)) >= LAST_USED_EVERY_MS) {
        lastWritten.set(id, now);
        if (lastWritten.size > 100_000)
          lastWritten.delete(lastWritten.keys().next().value as string);
        void update(id, (r) =>
          create(ApiKeyRecordSchema, { ...r, lastUsedAtMs: BigInt(now) }),
        ).catch(() => {});
      }
      return { record };
    },
    async get(id, signal) {
      if (!/^[0-9a-f]{16}$/.test(id)) return undefined;
      return (await getMessage(store, ApiKeyRecordSchema, PREFIX + id, { signal }))?.message;
    },
    async list(principal, signal) {
      const out: ApiKeyRecord[] = [];
      for await (const kv of rangeAll(store, PREFIX, { signal })) {
        const r = decodeMessage(ApiKeyRecordSchema, kv);
        if (principal === undefined || r.principal === principal) out.push(r);
      }
      return out;
    },
    revoke: (id, signal) =>
      update(
        id,
        (r) =>
          r.revokedAtMs !== 0n
            ? r
            : create(ApiKeyRecordSchema, { ...r, revokedAtMs: BigInt(clock.now()) }),
        signal,
      ),
    async rotate(id, graceMs, createdBy, signal) {
      const old = await getMessage(store, ApiKeyRecordSchema, PREFIX + id, { signal });
      if (old === undefined) throw new RpcError("APIKEY_NOT_FOUND");
      if (old.message.revokedAtMs !== 0n) throw new RpcError("APIKEY_REVOKED");
      const o = old.message;
      // A dead key must not be brought back to life by rotating it.
      if (o.expiresAtMs !== 0n && BigInt(clock.now()) >= o.expiresAtMs)
        throw new RpcError("APIKEY_EXPIRED");
      const remaining = o.expiresAtMs === 0n ? 0 : Number(o.expiresAtMs) - clock.now();
      const issued = await create_(
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
      await update(
        id,
        (r) =>
          create(ApiKeyRecordSchema, {
            ...r,
            replacedBy: issued.record.id,
            expiresAtMs:
              r.expiresAtMs !== 0n && r.expiresAtMs < graceEnd ? r.expiresAtMs : graceEnd,
          }),
        signal,
      );
      return issued;
    },
  };
}

function sha256(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}
