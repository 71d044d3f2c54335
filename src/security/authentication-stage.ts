import { setTimeout as sleep } from "node:timers/promises";
import {
  type Clock,
  mapStream,
  type Principal,
  RpcError,
  type Stage,
  sourceOf,
  withPrincipal,
} from "../core/index.js";
import { type ApiKeys, apiKeyIdOf } from "./api-keys.js";
import type { JwtIdentity, JwtVerifier } from "./jwt-verifier.js";
import { jwtSubjectOf, looksLikeJwt } from "./jwt-verifier.js";
import type { Lockout } from "./lockout.js";
import { jwtPrincipal } from "./principal-names.js";
import { sourceGroupOf } from "./source-group.js";
import { showsView } from "./stream-authorization.js";
import { allOf, at, endWhen, type Subscribe } from "./stream-end.js";

/** Options of {@link createAuthenticationStage}. */
export interface AuthenticationOptions {
  readonly apiKeys: ApiKeys;
  /** The JWT verifier in force (undefined: JWTs are not accepted); read per call, so reloads apply. */
  readonly jwt: () => JwtVerifier | undefined;
  readonly lockout: Lockout;
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
interface CredentialLife {
  expiresAtMs?: number;
  sessionId?: string;
  token?: string;
  /** When the token was verified and taken. */
  acceptedAtMs?: number;
}

/** Failed answers held back at once at most; past this, failures are answered at once (memory stays bounded). */
const MAX_HELD = 1000;

/**
 * Authenticates every non-public call, in this order: a client certificate
 * the TLS layer verified against the cluster CA (its CN is the principal);
 * else `authorization: Bearer <token>`, a JWT when it has a JWS's shape,
 * otherwise an API key. Nothing else in metadata is ever an identity. Every
 * failure is the same UNAUTHENTICATED for the client; the reason is logged.
 * Failures are counted per presented credential (API key id, JWT issuer and
 * subject): one guessed too often is locked for a while, and each further
 * failed attempt with it is told so (AUTH_LOCKED_OUT, "locked out until
 * ..."); the right secret, or a validly signed token, still authenticates,
 * since a key id or a JWT's subject is no secret. An address that fails
 * often is only slowed down (its failures are answered late), so a flood of
 * bad credentials from a shared address never refuses a good one. A verified
 * certificate cannot be guessed, so it is never locked.
 */
export function createAuthenticationStage(options: AuthenticationOptions): Stage {
  const { apiKeys, jwt, lockout } = options;
  let held = 0;
  const seen = watchCredentialChanges(options);
  return async (invocation, next) => {
    const { ctx } = invocation;
    if (ctx.method.access === "public") return next(invocation);
    // What changed while this call was verified and went through the later stages counts.
    const reloadsAtStart = seen.reloads();
    const source = sourceGroupOf(sourceOf(ctx.peer.address));
    const lockedOut = (credential: string, until: number, why: string): RpcError => {
      ctx.notes.decision = "unauthenticated";
      ctx.notes.reason = why;
      ctx.log.warn({ peer: ctx.peer.address, credential, until }, why);
      return new RpcError("AUTH_LOCKED_OUT", {
        message: `locked out until ${new Date(until).toISOString()} after repeated failed authentications`,
        retryAfterMs: Math.max(0, until - ctx.startedAt),
      });
    };
    const refuse = async (why: string, credential?: string): Promise<never> => {
      ctx.notes.decision = "unauthenticated";
      ctx.notes.reason = why;
      const outcome = lockout.recordFailure(source, credential);
      ctx.log.warn(
        { peer: ctx.peer.address, why, credential, lockedUntil: outcome.lockedUntil },
        "authentication failed",
      );
      if (outcome.delayMs > 0 && held < MAX_HELD) {
        held++;
        try {
          await sleep(outcome.delayMs, undefined, { signal: ctx.signal }).catch(() => {});
        } finally {
          held--;
        }
      }
      // Only a failed attempt is told the credential is locked: the right secret or a validly
      // signed token still works, so whoever knows a key id or a JWT's subject cannot lock its owner out.
      const until =
        outcome.lockedUntil ??
        (credential === undefined ? undefined : lockout.lockedUntil(credential));
      if (until !== undefined && credential !== undefined)
        throw lockedOut(credential, until, `${why}; credential locked out`);
      throw new RpcError("UNAUTHENTICATED", { cause: new Error(why) });
    };
    let principal: Principal | undefined;
    const life: CredentialLife = {};
    const cert = ctx.peer.certificate;
    if (cert !== undefined) {
      if (cert.commonName === "") await refuse("client certificate has no single CN");
      if (options.revocations?.isRevoked(cert.serialNumber))
        await refuse(`client certificate ${cert.serialNumber} is revoked`);
      // Verified when the connection was made; a connection outlives it (an hour by default).
      if (cert.notAfterMs !== undefined && (options.clock?.now() ?? Date.now()) >= cert.notAfterMs)
        await refuse(`client certificate ${cert.serialNumber} has expired`);
      principal = { id: cert.commonName, method: "mtls", roles: [] };
      life.expiresAtMs = cert.notAfterMs;
    } else {
      const header = ctx.headers.get("authorization");
      if (header === undefined) await refuse("no credentials");
      const m = /^Bearer ([\x21-\x7e]{1,16384})$/.exec(header as string);
      if (m === null) await refuse("authorization header is not a bearer token");
      const token = (m as RegExpExecArray)[1] as string;
      const credential = credentialOf(token);
      if (looksLikeJwt(token)) {
        const verifier = jwt();
        if (verifier === undefined)
          await refuse("JWT presented but no issuer is configured", credential);
        const r = await (verifier as JwtVerifier).verify(token);
        if ("failure" in r) await refuse(`JWT refused: ${r.failure}`, credential);
        else {
          principal = {
            id: r.identity.principal ?? jwtPrincipal(r.identity.issuer, r.identity.subject),
            method: "jwt",
            roles: r.identity.roles,
            tenant: r.identity.tenant,
          };
          life.expiresAtMs = r.identity.expiresAtMs;
          life.acceptedAtMs = r.identity.verifiedAtMs;
          life.sessionId = r.identity.sessionId;
          life.token = token;
        }
      } else {
        const r = await apiKeys.verify(token, ctx.signal);
        if ("failure" in r) await refuse(`API key refused: ${r.failure}`, credential);
        else {
          const k = r.record;
          principal = {
            id: k.principal,
            method: "apikey",
            roles: k.roles,
            tenant: k.tenant || undefined,
            keyId: k.id,
          };
          if (k.expiresAtMs !== 0n) life.expiresAtMs = Number(k.expiresAtMs);
        }
      }
    }
    ctx.notes.principal = principal;
    const result = await next({ ...invocation, ctx: withPrincipal(ctx, principal as Principal) });
    return mapStream(result, (responses) =>
      endWhen(
        responses,
        ...credentialLife(options, seen, principal as Principal, cert?.serialNumber, {
          ...life,
          view: showsView(ctx.method.name),
          reloadsAtStart,
        }),
      ),
    );
  };
}

/**
 * What keeps a stream's credential good, as the check and the changes to
 * check it on that {@link endWhen} takes: a certificate not revoked, an API
 * key neither revoked, expired nor removed, a token before its `exp`, a
 * panel session not ended. A stream ends with UNAUTHENTICATED once its
 * credential would no longer authenticate a new call.
 */
function credentialLife(
  options: AuthenticationOptions,
  seen: CredentialChanges,
  principal: Principal,
  serial: string | undefined,
  given: CredentialLife & { view: boolean; reloadsAtStart: number },
): [() => RpcError | undefined, Subscribe] {
  // Expiry ends a stream that shows what the caller may see; one doing work (a drain started
  // from the panel) is not cut by a token or key that ran out, only by a revocation.
  const life = given.view ? given : { ...given, expiresAtMs: undefined };
  // A stream doing work judges its token as of when it was accepted: its expiry aside, it must
  // still be what it was (issuer, signature, identity) and its panel session must still live.
  const now = () => options.clock?.now() ?? Date.now();
  const acceptedAtMs = given.view ? undefined : (given.acceptedAtMs ?? now());
  const gone = (why: string) => new RpcError("UNAUTHENTICATED", { cause: new Error(why) });
  const { revocations, apiKeys } = options;
  if (serial !== undefined)
    return [
      () =>
        revocations?.isRevoked(serial) === true
          ? gone("client certificate revoked during the stream")
          : life.expiresAtMs !== undefined && now() >= life.expiresAtMs
            ? gone("client certificate expired during the stream")
            : undefined,
      allOf((l) => revocations?.onChange(l) ?? (() => {}), at(life.expiresAtMs, now)),
    ];
  const keyId = principal.keyId;
  if (keyId !== undefined) {
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
interface CredentialChanges {
  reloads(): number;
  endedLately(sessionId: string): boolean;
}

/** How often a stream doing work for a panel session checks the session still lives. */
const SESSION_RECHECK_MS = 30_000;

/** Panel sessions ended lately, remembered for the calls on their way; the oldest go first. */
const ENDED_REMEMBERED = 10_000;

function watchCredentialChanges(options: AuthenticationOptions): CredentialChanges {
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

/**
 * The credential a bearer token claims to be, for counting failures: the
 * API key's id (its public part) or the JWT's issuer and subject (read
 * without verifying). Undefined when the token names none.
 */
export function credentialOf(token: string): string | undefined {
  if (looksLikeJwt(token)) {
    const s = jwtSubjectOf(token);
    return s === undefined ? undefined : `jwt:${s.issuer}:${s.subject}`;
  }
  const id = apiKeyIdOf(token);
  return id === undefined ? undefined : `apikey:${id}`;
}

/** Kept here for the callers that import it from this file; it lives in core. */
export { sourceOf } from "../core/index.js";
