import { createHash, generateKeyPairSync, randomBytes } from "node:crypto";
import { importPKCS8, SignJWT } from "jose";
import type { Clock } from "../core/index.js";
import {
  type PanelSessionRecord,
  PanelSessionRecordSchema,
} from "../gen/debvisor/store/v1/panel_records_pb.js";
import { createJwtVerifier, type JwtVerifier, type Take } from "../security/index.js";
import {
  decodeMessage,
  encodeMessage,
  getMessage,
  type KvStore,
  rangeAll,
} from "../store/index.js";
import { userPrincipal } from "./panel-users.js";

/** `iss` of the panel's access tokens; no configured issuer can mint them. */
export const PANEL_ISSUER = "debvisor-panel";
const AUDIENCE = "debvisor-rpc";
const PREFIX = "panel/sessions/";
/** Rotated-away refresh hashes kept per session to recognise reuse. */
const SPENT_KEPT = 64;

/** Options of {@link createPanelSessions}. */
export interface PanelSessionsOptions {
  readonly store: KvStore;
  readonly clock: Clock;
  /** Lifetime of an access token (default 5 minutes). */
  readonly accessTtlMs?: number;
  /** Absolute lifetime of a session, refreshes or not (default 12 hours). */
  readonly sessionTtlMs?: number;
}

/** Tokens handed to a browser, only ever in httpOnly cookies. */
export interface SessionTokens {
  readonly sessionId: string;
  readonly accessToken: string;
  readonly refreshToken: string;
  readonly accessExpiresAtMs: number;
  readonly sessionExpiresAtMs: number;
}

/** Why a refresh was refused (for logs and the audit trail, not the client). */
export type RefreshFailure =
  | "malformed"
  | "unknown-session"
  | "ended"
  | "expired"
  | "reused"
  | "unknown-token"
  | "rate-limited";

/** Sign-in sessions: a short access token and a rotating refresh token. */
export interface PanelSessions {
  /** Verifies access tokens: signature, expiry, and that the session is still live. */
  readonly verifier: JwtVerifier;
  /**
   * Starts a session of `user`, acting as `user:<user>`, or as `principal`
   * when given (a person signed in through OpenID Connect; `user` is then the
   * principal too, so admin revocation finds the session by it).
   */
  start(user: string, source: string, principal?: string): Promise<SessionTokens>;
  /**
   * Exchanges a refresh token for new tokens. Presenting a refresh token
   * that was already rotated away ends the whole session (`reused`).
   * `admit`, asked once the token is known to be the session's current one
   * and before it is rotated, may refuse for the principal's rate limit
   * (`rate-limited`: the token stays valid).
   */
  refresh(
    token: string,
    admit?: (principal: string) => Take,
  ): Promise<
    | { tokens: SessionTokens; user: string; principal: string }
    | {
        failure: RefreshFailure;
        sessionId?: string;
        user?: string;
        principal?: string;
        retryAfterMs?: number;
      }
  >;
  /** Ends a session now; its open streams end too. False if it was not live. */
  end(sessionId: string, reason: string): Promise<boolean>;
  /** Ends every live session of a user (admin revocation); returns how many. */
  endAllOf(user: string, reason: string): Promise<number>;
  /** The session a token belongs to, read without verifying it. */
  sessionIdOf(token: string): string | undefined;
  /**
   * The session these cookies prove to hold: a refresh token of it (current,
   * or one rotated away: a holder of a copy may end it too) or a valid access
   * token. A session id alone proves nothing (audit records name it).
   */
  heldSession(refreshToken: string, accessToken: string): Promise<string | undefined>;
  isLive(sessionId: string): Promise<boolean>;
  /** Called with the session id whenever this process ends a session. */
  onEnd(listener: (sessionId: string) => void): () => void;
  /** Deletes the records of sessions past their absolute lifetime; returns how many. */
  sweep(): Promise<number>;
}

/**
 * A verifier that takes the panel's access tokens to `panel` and every other
 * JWT to `other` (the configured issuers), so no configured issuer can mint
 * a panel token.
 */
export function withPanelIssuer(panel: JwtVerifier, other: JwtVerifier | undefined): JwtVerifier {
  return {
    async verify(token, atMs) {
      let iss: unknown;
      try {
        iss = (
          JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString()) as {
            iss?: unknown;
          }
        ).iss;
      } catch {
        return { failure: "not a decodable JWT" };
      }
      if (iss === PANEL_ISSUER) return panel.verify(token, atMs);
      return other === undefined
        ? { failure: "JWT presented but no issuer is configured" }
        : other.verify(token, atMs);
    },
  };
}

/** The principal a session acts as. */
export function sessionPrincipal(r: { user: string; principal: string }): string {
  return r.principal === "" ? userPrincipal(r.user) : r.principal;
}

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");
const SID = /^[A-Za-z0-9_-]{22}$/;

/**
 * Creates the session keeper. Access tokens are ES256 JWTs signed with a key
 * made at start-up (a restart only costs a refresh) and verified by the very
 * authentication stage gRPC calls go through, which also asks this keeper
 * whether the session is still live: logout and revocation apply at once,
 * on either transport.
 */
export async function createPanelSessions(options: PanelSessionsOptions): Promise<PanelSessions> {
  const { store, clock } = options;
  const accessTtlMs = options.accessTtlMs ?? 300_000;
  const sessionTtlMs = options.sessionTtlMs ?? 43_200_000;
  const pair = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const signingKey = await importPKCS8(
    pair.privateKey.export({ format: "pem", type: "pkcs8" }).toString(),
    "ES256",
  );
  const inner = createJwtVerifier(
    [
      {
        issuer: PANEL_ISSUER,
        audience: AUDIENCE,
        algorithms: ["ES256"],
        publicKeyPems: [pair.publicKey.export({ format: "pem", type: "spki" }).toString()],
        rolesClaim: "roles",
        clockSkewSeconds: 0,
      },
    ],
    clock,
  );
  const listeners = new Set<(sid: string) => void>();
  const key = (sid: string) => `${PREFIX}${sid}`;
  const read = (sid: string) =>
    SID.test(sid)
      ? getMessage(store, PanelSessionRecordSchema, key(sid))
      : Promise.resolve(undefined);
  const live = (r: PanelSessionRecord | undefined) =>
    r !== undefined && !r.revoked && Number(r.expiresAtMs) > clock.now();

  async function issue(
    record: PanelSessionRecord,
  ): Promise<{ tokens: SessionTokens; refreshHash: string }> {
    const now = clock.now();
    const accessExpiresAtMs = Math.min(now + accessTtlMs, Number(record.expiresAtMs));
    const accessToken = await new SignJWT({ sid: record.sessionId, roles: [] })
      .setProtectedHeader({ alg: "ES256" })
      .setIssuer(PANEL_ISSUER)
      .setAudience(AUDIENCE)
      .setSubject(sessionPrincipal(record))
      .setIssuedAt(Math.floor(now / 1000))
      .setExpirationTime(Math.floor(accessExpiresAtMs / 1000))
      .sign(signingKey);
    const refreshToken = `${record.sessionId}.${randomBytes(32).toString("base64url")}`;
    return {
      tokens: {
        sessionId: record.sessionId,
        accessToken,
        refreshToken,
        accessExpiresAtMs,
        sessionExpiresAtMs: Number(record.expiresAtMs),
      },
      refreshHash: sha256(refreshToken),
    };
  }

  async function end(sid: string, reason: string): Promise<boolean> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const cur = await read(sid);
      if (cur === undefined || cur.message.revoked) return false;
      const next = { ...cur.message, revoked: true, revokedReason: reason };
      const r = await store.txn({
        compares: [{ key: key(sid), modRevision: cur.modRevision }],
        success: [
          { type: "put", key: key(sid), value: encodeMessage(PanelSessionRecordSchema, next) },
        ],
      });
      if (r.succeeded) {
        for (const l of listeners) l(sid);
        return true;
      }
    }
    throw new Error(`session ${sid}: could not end it after repeated conflicts`);
  }

  const sessionIdOf = (token: string) => {
    const parts = token.split(".");
    let sid = parts[0] ?? "";
    if (parts.length === 3) {
      // An access token: its (unverified) sid claim; verification happens in the authentication stage.
      try {
        const claim = (
          JSON.parse(Buffer.from(parts[1] ?? "", "base64url").toString()) as { sid?: unknown }
        ).sid;
        sid = typeof claim === "string" ? claim : "";
      } catch {
        return undefined;
      }
    }
    return SID.test(sid) ? sid : undefined;
  };

  const verifier: JwtVerifier = {
    async verify(token, atMs) {
      // The session is judged as it is now, whatever time the token is judged at.
      const r = await inner.verify(token, atMs);
      if ("failure" in r) return r;
      const sid = sessionIdOf(token);
      if (sid === undefined || !live((await read(sid))?.message))
        return { failure: "panel session ended" };
      // A panel user is its own principal (`user:<name>`), not an outside issuer's subject.
      return { identity: { ...r.identity, principal: r.identity.subject, sessionId: sid } };
    },
  };

  return {
    verifier,
    async start(user, source, principal = "") {
      const now = clock.now();
      const record = {
        sessionId: randomBytes(16).toString("base64url"),
        user,
        createdAtMs: BigInt(now),
        expiresAtMs: BigInt(now + sessionTtlMs),
        refreshHash: "",
        spentRefreshHashes: [],
        refreshedAtMs: BigInt(now),
        revoked: false,
        revokedReason: "",
        source,
        principal,
      } as unknown as PanelSessionRecord;
      const { tokens, refreshHash } = await issue(record);
      const r = await store.txn({
        compares: [{ key: key(record.sessionId), modRevision: 0 }],
        success: [
          {
            type: "put",
            key: key(record.sessionId),
            value: encodeMessage(PanelSessionRecordSchema, { ...record, refreshHash }),
          },
        ],
      });
      if (!r.succeeded) throw new Error("session id collision");
      return tokens;
    },
    async refresh(token, admit) {
      const sid = sessionIdOf(token);
      if (sid === undefined || token.length > 200) return { failure: "malformed" };
      const hash = sha256(token);
      let admitted: Take | undefined;
      for (let attempt = 0; attempt < 10; attempt++) {
        const cur = await read(sid);
        if (cur === undefined) return { failure: "unknown-session" };
        const s = cur.message;
        const who = { sessionId: sid, user: s.user, principal: sessionPrincipal(s) };
        if (s.revoked) return { failure: "ended", ...who };
        if (Number(s.expiresAtMs) <= clock.now()) return { failure: "expired", ...who };
        if (s.spentRefreshHashes.includes(hash)) {
          // A rotated token came back: someone holds a copy. End the session for both holders.
          await end(sid, "refresh token reused");
          return { failure: "reused", ...who };
        }
        if (s.refreshHash !== hash) return { failure: "unknown-token", ...who };
        // Asked once: a lost race below comes round again and must not spend twice.
        admitted ??= admit?.(who.principal);
        if (admitted !== undefined && !admitted.allowed)
          return { failure: "rate-limited", retryAfterMs: admitted.retryAfterMs, ...who };
        const { tokens, refreshHash } = await issue(s);
        const next = {
          ...s,
          refreshHash,
          refreshedAtMs: BigInt(clock.now()),
          spentRefreshHashes: [...s.spentRefreshHashes, hash].slice(-SPENT_KEPT),
        };
        const r = await store.txn({
          compares: [{ key: key(sid), modRevision: cur.modRevision }],
          success: [
            { type: "put", key: key(sid), value: encodeMessage(PanelSessionRecordSchema, next) },
          ],
        });
        // Lost a race: read again; if the other writer rotated this very token, this is reuse.
        if (r.succeeded) return { tokens, user: s.user, principal: who.principal };
      }
      throw new Error(`session ${sid}: could not refresh after repeated conflicts`);
    },
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
    sessionIdOf,
    async heldSession(refreshToken, accessToken) {
      const sid = sessionIdOf(refreshToken);
      const s = sid === undefined || refreshToken.length > 200 ? undefined : await read(sid);
      const hash = sha256(refreshToken);
      if (
        s !== undefined &&
        (s.message.refreshHash === hash || s.message.spentRefreshHashes.includes(hash))
      )
        return sid;
      const r = accessToken === "" ? undefined : await verifier.verify(accessToken);
      return r === undefined || "failure" in r ? undefined : r.identity.sessionId;
    },
    async isLive(sid) {
      return live((await read(sid))?.message);
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
