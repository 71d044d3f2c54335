import type { Clock, Principal } from "../core/index.js";
import { RpcError } from "../core/index.js";
import type { ApiKeys } from "./api-keys.js";
import type { JwtIdentity, JwtVerifier } from "./jwt-verifier.js";
import { jwtPrincipal } from "./principal-names.js";
import { allOf, at, type Subscribe } from "./stream-end.js";

/**
 * How long an authenticated stream's credential stays good: what ends a
 * stream once its certificate, API key, token or panel session would no
 * longer authenticate a new call (the authentication stage hands these to
 * endWhen).
 */

/** What {@link credentialLife} watches: the credentials' stores and the changes that may refuse one. */
export interface CredentialLifeOptions {
  readonly apiKeys: ApiKeys;
  /** The JWT verifier in force (undefined: JWTs are not accepted); read per call, so reloads apply. */
  readonly jwt: () => JwtVerifier | undefined;
  /** Revoked client certificates; a revoked certificate is never an identity, and its open streams end. */
  readonly revocations?: {
    isRevoked(serialHex: string): boolean;
    onChange(listener: () => void): () => void;
  };
  /** Tells of each panel session that ends (its id), so that its streams end too. */
  readonly sessionEnds?: (listener: (sessionId: string) => void) => () => void;
  /** Tells of each config reload (issuers may have changed): JWT streams verify their tokens again. */
  readonly credentialChanges?: (listener: () => void) => () => void;
  /** How often a stream doing work for a panel session checks the session (default 30 s). */
  readonly sessionRecheckMs?: number;
  /** For tokens' and keys' expiry; the system clock when not given. */
  readonly clock?: Clock;
}

/** When a stream's credential runs out, the panel session it belongs to, and its token (JWTs). */
export interface CredentialLife {
  expiresAtMs?: number;
  sessionId?: string;
  token?: string;
  /** When the token was verified and taken. */
  acceptedAtMs?: number;
}

/** A stream's check of its credential, and the changes to run it on, as {@link endWhen} takes them. */
export type StreamEnd = [() => RpcError | undefined, Subscribe];

/** A stream's credential as the stage accepted it. */
type Accepted = CredentialLife & { view: boolean; reloadsAtStart: number };

const gone = (why: string) => new RpcError("UNAUTHENTICATED", { cause: new Error(why) });

/**
 * What keeps a stream's credential good, as the check and the changes to
 * check it on that {@link endWhen} takes: a certificate not revoked, an API
 * key neither revoked, expired nor removed, a token before its `exp`, a
 * panel session not ended. A stream ends with UNAUTHENTICATED once its
 * credential would no longer authenticate a new call.
 */
export function credentialLife(
  options: CredentialLifeOptions,
  seen: CredentialChanges,
  principal: Principal,
  serial: string | undefined,
  given: Accepted,
): StreamEnd {
  // Expiry ends a stream that shows what the caller may see; one doing work (a drain started
  // from the panel) is not cut by a token or key that ran out, only by a revocation.
  const life = given.view ? given : { ...given, expiresAtMs: undefined };
  const now = () => options.clock?.now() ?? Date.now();
  if (serial !== undefined) return certificateLife(options, serial, life, now);
  if (principal.keyId !== undefined) return apiKeyLife(options, principal.keyId, life, now);
  // A stream doing work judges its token as of when it was accepted: its expiry aside, it must
  // still be what it was (issuer, signature, identity) and its panel session must still live.
  const acceptedAtMs = given.view ? undefined : (given.acceptedAtMs ?? now());
  return tokenLife(options, seen, principal, life, acceptedAtMs, now);
}

/** A client certificate: not revoked, not expired. */
function certificateLife(
  options: CredentialLifeOptions,
  serial: string,
  life: CredentialLife,
  now: () => number,
): StreamEnd {
  const { revocations } = options;
  return [
    () =>
      revocations?.isRevoked(serial) === true
        ? gone("client certificate revoked during the stream")
        : life.expiresAtMs !== undefined && now() >= life.expiresAtMs
          ? gone("client certificate expired during the stream")
          : undefined,
    allOf((l) => revocations?.onChange(l) ?? (() => {}), at(life.expiresAtMs, now)),
  ];
}

/** An API key: neither revoked, removed nor (for a view) expired, as this daemon's copy holds it. */
function apiKeyLife(
  options: CredentialLifeOptions,
  keyId: string,
  life: CredentialLife & { view: boolean },
  now: () => number,
): StreamEnd {
  const { apiKeys } = options;
  // A key made on another daemon a moment ago may not be in this one's copy yet (verify()
  // read it from the store): absent counts as removed only once the copy has held it.
  let held = apiKeys.inCopy(keyId);
  return [
    () => {
      held ||= apiKeys.inCopy(keyId);
      const failure = apiKeys.failureInCopy(keyId);
      return failure === undefined ||
        (failure === "unknown" && !held) ||
        (failure === "expired" && !life.view)
        ? undefined
        : gone(`API key ${failure} during the stream`);
    },
    // The expiry as the copy holds it now: a rotation moves the old key's to its grace's end.
    (listener) => {
      let stopTimer = at(life.expiresAtMs, now)(listener);
      const stopChanges = apiKeys.onChange(() => {
        stopTimer();
        if (life.view)
          stopTimer = at(apiKeys.expiryInCopy(keyId) ?? life.expiresAtMs, now)(listener);
        listener();
      });
      return () => {
        stopChanges();
        stopTimer();
      };
    },
  ];
}

/** A JWT (the panel's, or an issuer's): before its `exp`, still verified as it was, its panel session alive. */
function tokenLife(
  options: CredentialLifeOptions,
  seen: CredentialChanges,
  principal: Principal,
  life: Accepted,
  acceptedAtMs: number | undefined,
  now: () => number,
): StreamEnd {
  let ended = false;
  let refused = false;
  const sid = life.sessionId;
  /** Arms the expiry timer again for the expiry the token now has (a reload changed the skew). */
  let rearm: (() => void) | undefined;
  const expiry: Subscribe = (listener) => {
    let stop = at(life.expiresAtMs, now)(listener);
    rearm = () => {
      stop();
      stop = at(life.expiresAtMs, now)(listener);
      listener();
    };
    return () => {
      rearm = undefined;
      stop();
    };
  };
  /**
   * Verifies the token again: refused when the verifier no longer takes it,
   * or takes it as someone else. Only the verifier in force decides: the
   * late answer of one a later reload replaced is old news (that reload
   * verifies again), and every answer of the one in force counts, however
   * many checks are under way.
   */
  const verifyAgain = (listener: () => void) => {
    const verifier = options.jwt();
    const token = life.token;
    const inForce = () => options.jwt() === verifier;
    const refuse = () => {
      refused = true;
      listener();
    };
    if (verifier === undefined || token === undefined) return refuse();
    verifier.verify(token, acceptedAtMs).then(
      (r) => {
        if (!inForce()) return;
        if ("failure" in r || !sameIdentity(principal, r.identity)) return refuse();
        // Still taken, but perhaps until another time (the issuer's skew changed): a view
        // stream ends when verify() stops taking the token under the rules now in force.
        if (life.view && r.identity.expiresAtMs !== life.expiresAtMs) {
          life.expiresAtMs = r.identity.expiresAtMs;
          rearm?.();
        }
      },
      () => {
        if (inForce()) refuse();
      },
    );
  };
  return [
    () =>
      ended
        ? gone("panel session ended during the stream")
        : refused
          ? gone("token no longer accepted as it was during the stream")
          : life.expiresAtMs !== undefined && now() >= life.expiresAtMs
            ? gone("token expired during the stream")
            : undefined,
    allOf(
      expiry,
      (listener) => {
        if (sid === undefined) return () => {};
        // Ended while the call was on its way here: the session's streams end too.
        if (seen.endedLately(sid)) {
          ended = true;
          listener();
        }
        return (
          options.sessionEnds?.((endedId) => {
            if (endedId !== sid) return;
            ended = true;
            listener();
          }) ?? (() => {})
        );
      },
      // Issuers reloaded (one removed, its claims or allowed roles and tenants changed): the
      // token is verified again, also for a reload while this call was on its way here.
      (listener) => {
        if (seen.reloads() !== life.reloadsAtStart) verifyAgain(listener);
        return options.credentialChanges?.(() => verifyAgain(listener)) ?? (() => {});
      },
      // A session can end on another daemon, which tells only its own streams: a stream doing
      // work for a panel session (no expiry to end it) asks again every so often.
      (listener) => {
        if (sid === undefined || acceptedAtMs === undefined) return () => {};
        const timer = setInterval(
          () => verifyAgain(listener),
          options.sessionRecheckMs ?? SESSION_RECHECK_MS,
        );
        timer.unref();
        return () => clearInterval(timer);
      },
    ),
  ];
}

/** Whether a token verified again still names the principal a stream authenticated as. */
function sameIdentity(principal: Principal, identity: JwtIdentity): boolean {
  const id = identity.principal ?? jwtPrincipal(identity.issuer, identity.subject);
  return (
    id === principal.id &&
    identity.tenant === principal.tenant &&
    [...identity.roles].sort().join() === [...principal.roles].sort().join()
  );
}

/** Counts of what may refuse a token accepted before, kept by the stage for the calls on their way. */
export interface CredentialChanges {
  reloads(): number;
  endedLately(sessionId: string): boolean;
}

/** How often a stream doing work for a panel session checks the session still lives. */
const SESSION_RECHECK_MS = 30_000;

/** Panel sessions ended lately, remembered for the calls on their way; the oldest go first. */
const ENDED_REMEMBERED = 10_000;

export function watchCredentialChanges(options: CredentialLifeOptions): CredentialChanges {
  let reloads = 0;
  const ended = new Set<string>();
  options.credentialChanges?.(() => {
    reloads++;
  });
  options.sessionEnds?.((sid) => {
    ended.add(sid);
    if (ended.size > ENDED_REMEMBERED) ended.delete(ended.values().next().value as string);
  });
  return { reloads: () => reloads, endedLately: (sid) => ended.has(sid) };
}
