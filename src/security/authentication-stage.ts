import { setTimeout as sleep } from "node:timers/promises";
import {
  mapStream,
  type Principal,
  RpcError,
  type Stage,
  sourceOf,
  withPrincipal,
} from "../core/index.js";
import { apiKeyIdOf } from "./api-keys.js";
import {
  type CredentialLife,
  type CredentialLifeOptions,
  credentialLife,
  watchCredentialChanges,
} from "./credential-life.js";
import { type JwtVerifier, jwtSubjectOf, looksLikeJwt } from "./jwt-verifier.js";
import type { Lockout } from "./lockout.js";
import { jwtPrincipal } from "./principal-names.js";
import { sourceGroupOf } from "./source-group.js";
import { showsView } from "./stream-authorization.js";
import { endWhen } from "./stream-end.js";

/** Options of {@link createAuthenticationStage}. */
export interface AuthenticationOptions extends CredentialLifeOptions {
  readonly lockout: Lockout;
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
        // An expiry's timer may run after a message made past it: a call refused as
        // expired, then a change delivered to the stream (seen in a fresh-clone CI run).
        true,
      ),
    );
  };
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
