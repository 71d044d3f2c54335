// The panel's sign-in sessions: a short access token and a rotating refresh
// token per session, over the session records (panel-session-records.ts) and
// the token issuer (panel-access-tokens.ts).

import { randomBytes } from "node:crypto";
import type { Clock } from "../core/index.js";
import {
  type PanelSessionRecord,
  PanelSessionRecordSchema,
} from "../gen/debvisor/store/v1/panel_records_pb.js";
import type { JwtVerifier, Take } from "../security/index.js";
import { encodeMessage, type KvStore, LOST, retryWhileLost } from "../store/index.js";
import {
  createPanelAccessTokens,
  type SessionTokens,
  sessionIdOf,
  sha256,
} from "./panel-access-tokens.js";
import { createPanelSessionRecords, sessionPrincipal } from "./panel-session-records.js";

/** Rotated-away refresh hashes kept per session to recognise reuse. */
const SPENT_KEPT = 64;
/** While a refresh token just rotated away is taken back as the session's (two tabs refreshing at once). */
export const REFRESH_REUSE_GRACE_MS = 10_000;
/** Sessions a user may have at once (default); a sign-in past it ends the user's oldest. */
export const MAX_SESSIONS_PER_USER = 20;

/** Options of {@link createPanelSessions}. */
export interface PanelSessionsOptions {
  readonly store: KvStore;
  readonly clock: Clock;
  /** Lifetime of an access token (default 5 minutes). */
  readonly accessTtlMs?: number;
  /** Absolute lifetime of a session, refreshes or not (default 12 hours). */
  readonly sessionTtlMs?: number;
  /** Sessions a user may have at once (default {@link MAX_SESSIONS_PER_USER}). */
  readonly maxSessionsPerUser?: number;
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

/** A started session's tokens, and the user's older sessions its start ended (past the cap). */
export interface StartedSession extends SessionTokens {
  readonly endedOlder: readonly string[];
}

/** Sign-in sessions: a short access token and a rotating refresh token. */
export interface PanelSessions {
  /** Verifies access tokens: signature, expiry, and that the session is still live. */
  readonly verifier: JwtVerifier;
  /**
   * Starts a session of `user`, acting as `user:<user>`, or as `principal`
   * when given (a person signed in through OpenID Connect; `user` is then the
   * principal too, so admin revocation finds the session by it). Past the
   * user's cap its oldest sessions end and their records go (`endedOlder`).
   */
  start(user: string, source: string, principal?: string): Promise<StartedSession>;
  /**
   * Exchanges a refresh token for new tokens. Presenting a refresh token
   * that was already rotated away ends the whole session (`reused`), unless
   * it is the one rotated away last, less than {@link REFRESH_REUSE_GRACE_MS}
   * ago (two tabs refreshing at once): then the answer is an access token of
   * the same session, expiring with the successor's, and no refresh token
   * (`refreshToken` empty; the browser holds the successor).
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
  const maxPerUser = options.maxSessionsPerUser ?? MAX_SESSIONS_PER_USER;
  const { verifier: inner, issue } = await createPanelAccessTokens(clock, accessTtlMs);
  const records = createPanelSessionRecords(store, clock);
  const { key, read, live, end } = records;

  /** Whether `hash` is the refresh token rotated away last, less than the grace ago. */
  const inGrace = (s: PanelSessionRecord, hash: string) =>
    s.spentRefreshHashes.at(-1) === hash &&
    clock.now() < Number(s.refreshedAtMs) + REFRESH_REUSE_GRACE_MS;

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
      // Past the cap the oldest session ends, as browsers' and Keycloak's do: the user
      // signing in now is the one present, not refused for sessions long forgotten.
      const endedOlder = await records.keepNewest(
        user,
        maxPerUser,
        record.sessionId,
        r.revision,
        "session limit: a newer sign-in",
      );
      return { ...tokens, endedOlder };
    },
    async refresh(token, admit) {
      const sid = sessionIdOf(token);
      if (sid === undefined || token.length > 200) return { failure: "malformed" };
      const hash = sha256(token);
      let admitted: Take | undefined;
      return retryWhileLost(
        10,
        async () => {
          const cur = await read(sid);
          if (cur === undefined) return { failure: "unknown-session" };
          const s = cur.message;
          const who = { sessionId: sid, user: s.user, principal: sessionPrincipal(s) };
          if (s.revoked) return { failure: "ended", ...who };
          if (Number(s.expiresAtMs) <= clock.now()) return { failure: "expired", ...who };
          const spent = s.spentRefreshHashes.includes(hash);
          // The token just rotated away, within the grace: another tab of the browser that
          // rotated it refreshed at once (graceful below). Any other spent one came back
          // from a copy: end the session for both holders.
          const graceful = spent && inGrace(s, hash);
          if (spent && !graceful) {
            await end(sid, "refresh token reused");
            return { failure: "reused", ...who };
          }
          if (!spent && s.refreshHash !== hash) return { failure: "unknown-token", ...who };
          // Asked once: a lost race below comes round again and must not spend twice.
          admitted ??= admit?.(who.principal);
          if (admitted !== undefined && !admitted.allowed)
            return { failure: "rate-limited", retryAfterMs: admitted.retryAfterMs, ...who };
          if (graceful) {
            // No refresh token (the browser holds the successor) and an access token expiring
            // with the successor's: nothing the rotation did not already hand out.
            const { tokens } = await issue(s, Number(s.refreshedAtMs) + accessTtlMs);
            return {
              tokens: { ...tokens, refreshToken: "" },
              user: s.user,
              principal: who.principal,
            };
          }
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
          // Lost a race: read again; if the other writer rotated this very token, the grace answers.
          if (!r.succeeded) return LOST;
          return { tokens, user: s.user, principal: who.principal };
        },
        () => {
          throw new Error(`session ${sid}: could not refresh after repeated conflicts`);
        },
      );
    },
    end,
    endAllOf: records.endAllOf,
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
    onEnd: records.onEnd,
    sweep: records.sweep,
  };
}
