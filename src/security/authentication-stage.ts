import { type Principal, RpcError, type Stage, withPrincipal } from "../core/index.js";
import type { ApiKeys } from "./api-keys.js";
import type { JwtVerifier } from "./jwt-verifier.js";
import { looksLikeJwt } from "./jwt-verifier.js";
import type { Lockout } from "./lockout.js";
import { jwtPrincipal } from "./principal-names.js";

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
}

/**
 * Authenticates every non-public call, in this order: a client certificate
 * the TLS layer verified against the cluster CA (its CN is the principal);
 * else `authorization: Bearer <token>`, a JWT when it has a JWS's shape,
 * otherwise an API key. Nothing else in metadata is ever an identity. Every
 * failure is the same UNAUTHENTICATED for the client; the reason is logged.
 * An address with too many failures is locked out of bearer
 * authentication (a verified certificate cannot be guessed, so it is not).
 */
export function createAuthenticationStage(options: AuthenticationOptions): Stage {
  const { apiKeys, jwt, lockout } = options;
  return async (invocation, next) => {
    const { ctx } = invocation;
    if (ctx.method.access === "public") return next(invocation);
    const source = sourceOf(ctx.peer.address);
    const refuse = (why: string): never => {
      ctx.notes.decision = "unauthenticated";
      ctx.notes.reason = why;
      const locked = lockout.recordFailure(source);
      ctx.log.warn({ peer: ctx.peer.address, why, lockedOut: locked }, "authentication failed");
      throw new RpcError("UNAUTHENTICATED", { cause: new Error(why) });
    };
    // A verified certificate cannot be guessed: the lockout guards bearer secrets only.
    if (ctx.peer.certificate === undefined && lockout.isLocked(source)) {
      ctx.notes.decision = "unauthenticated";
      ctx.notes.reason = "source locked out";
      ctx.log.debug({ peer: ctx.peer.address }, "authentication refused: source locked out");
      throw new RpcError("UNAUTHENTICATED", { cause: new Error("source locked out") });
    }
    let principal: Principal | undefined;
    const cert = ctx.peer.certificate;
    if (cert !== undefined) {
      if (cert.commonName === "") refuse("client certificate has no single CN");
      if (options.revocations?.isRevoked(cert.serialNumber))
        refuse(`client certificate ${cert.serialNumber} is revoked`);
      principal = { id: cert.commonName, method: "mtls", roles: [] };
    } else {
      const header = ctx.headers.get("authorization");
      if (header === undefined) refuse("no credentials");
      const m = /^Bearer ([\x21-\x7e]{1,16384})$/.exec(header as string);
      if (m === null) refuse("authorization header is not a bearer token");
      const token = (m as RegExpExecArray)[1] as string;
      if (looksLikeJwt(token)) {
        const verifier = jwt();
        if (verifier === undefined) refuse("JWT presented but no issuer is configured");
        const r = await (verifier as JwtVerifier).verify(token);
        if ("failure" in r) refuse(`JWT refused: ${r.failure}`);
        else
          principal = {
            id: jwtPrincipal(r.identity.issuer, r.identity.subject),
            method: "jwt",
            roles: r.identity.roles,
            tenant: r.identity.tenant,
          };
      } else {
        const r = await apiKeys.verify(token, ctx.signal);
        if ("failure" in r) refuse(`API key refused: ${r.failure}`);
        else {
          const k = r.record;
          principal = {
            id: k.principal,
            method: "apikey",
            roles: k.roles,
            tenant: k.tenant || undefined,
            keyId: k.id,
          };
        }
      }
    }
    ctx.notes.principal = principal;
    const result = await next({ ...invocation, ctx: withPrincipal(ctx, principal as Principal) });
    const revocations = options.revocations;
    if (
      cert !== undefined &&
      revocations !== undefined &&
      ctx.method.kind !== "unary" &&
      ctx.method.kind !== "client_streaming"
    ) {
      return endOnRevocation(
        result as AsyncIterable<unknown>,
        () => revocations.isRevoked(cert.serialNumber),
        revocations.onChange,
      );
    }
    return result;
  };
}

const REVOKED = Symbol("revoked");

/** Passes a response stream through until the caller's certificate is revoked, then ends it with UNAUTHENTICATED. */
async function* endOnRevocation(
  source: AsyncIterable<unknown>,
  isRevoked: () => boolean,
  onChange: (listener: () => void) => () => void,
): AsyncIterable<unknown> {
  const it = source[Symbol.asyncIterator]();
  let wake: (v: typeof REVOKED) => void = () => {};
  const revoked = new Promise<typeof REVOKED>((resolve) => {
    wake = resolve;
  });
  const unsubscribe = onChange(() => {
    if (isRevoked()) wake(REVOKED);
  });
  // A revocation that landed before the subscription would otherwise go unseen.
  if (isRevoked()) wake(REVOKED);
  try {
    for (;;) {
      const r = await Promise.race([it.next(), revoked]);
      if (r === REVOKED)
        throw new RpcError("UNAUTHENTICATED", {
          cause: new Error("client certificate revoked during the stream"),
        });
      if (r.done) return;
      yield r.value;
    }
  } finally {
    unsubscribe();
    // Not awaited: a pending next() would hold return() until it resolves.
    void it.return?.();
  }
}

/** The address part of `host:port` / `[v6]:port`: lockout and rate limits count per address, not per connection. */
export function sourceOf(address: string): string {
  const at = address.lastIndexOf(":");
  return (at > 0 ? address.slice(0, at) : address).replace(/^\[|\]$/g, "");
}
