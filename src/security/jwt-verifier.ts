import { createPublicKey } from "node:crypto";
import { createLocalJWKSet, decodeJwt, type JSONWebKeySet, type JWK, jwtVerify } from "jose";
import { type Clock, isTenantName } from "../core/index.js";

/** Asymmetric algorithms a token may be signed with; never `none`, never HMAC. */
export const JWT_ALGORITHMS = ["RS256", "ES256", "EdDSA"] as const;
/** One of {@link JWT_ALGORITHMS}. */
export type JwtAlgorithm = (typeof JWT_ALGORITHMS)[number];

/** A trusted token issuer. */
export interface JwtIssuer {
  /** Required `iss` (default debvisor-auth). */
  readonly issuer: string;
  /** Required `aud` (default debvisor-rpc). */
  readonly audience: string;
  /** Accepted algorithms, a subset of {@link JWT_ALGORITHMS}. */
  readonly algorithms: readonly JwtAlgorithm[];
  /** Verification keys: SPKI PEM public keys and/or a JWKS. */
  readonly publicKeyPems: readonly string[];
  readonly jwks?: JSONWebKeySet;
  /** Claim holding the principal's roles (a string array). */
  readonly rolesClaim: string;
  /** Claim holding the tenant, if tokens carry one: then a token without a valid tenant is refused. */
  readonly tenantClaim?: string;
  /** Roles this issuer's tokens may carry; a token claiming any other is refused (undefined: any). */
  readonly allowedRoles?: readonly string[];
  /** Tenants this issuer's tokens may name; a token naming another is refused (undefined: any). */
  readonly allowedTenants?: readonly string[];
  /** Clock skew tolerated on exp and nbf, seconds (at most 300). */
  readonly clockSkewSeconds: number;
}

/** A verified token's identity. */
export interface JwtIdentity {
  readonly subject: string;
  /** The issuer that vouched for it (`iss`). */
  readonly issuer: string;
  readonly roles: string[];
  readonly tenant: string | undefined;
  /**
   * The principal as named by a first-party verifier in this process (the
   * panel's sessions: `user:<name>`); a configured issuer's token never
   * carries one, and its principal is `jwt:<iss>:<sub>`.
   */
  readonly principal?: string;
  /** When verify() stops taking the token (`exp` and the skew tolerated), if it says. */
  readonly expiresAtMs?: number;
  /** The panel's session the token belongs to (panel tokens only). */
  readonly sessionId?: string;
  /** The time (epoch ms, the verifier's clock) the token was judged at. */
  readonly verifiedAtMs?: number;
}

/** Verifies bearer JWTs against the configured issuers. */
export interface JwtVerifier {
  /** The identity, or why the token was refused (for logs only). */
  verify(
    token: string,
    /** Judge the token as of this time (epoch ms) rather than now: a stream doing work checks later that what it was opened with still holds, its expiry aside. */
    atMs?: number,
  ): Promise<{ identity: JwtIdentity } | { failure: string }>;
}

const JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** True when `token` has the shape of a compact JWS (three base64url parts). */
export function looksLikeJwt(token: string): boolean {
  return token.length <= 16_384 && JWS.test(token);
}

/** The issuer and subject a JWT claims, read without verifying it (for counting failures only). */
export function jwtSubjectOf(token: string): { issuer: string; subject: string } | undefined {
  try {
    const { iss, sub } = decodeJwt(token);
    if (typeof iss !== "string" || typeof sub !== "string") return undefined;
    return { issuer: iss.slice(0, 256), subject: sub.slice(0, 256) };
  } catch {
    return undefined;
  }
}

/**
 * Creates a verifier. The issuer is picked by the token's `iss`; only that
 * issuer's keys and algorithms are tried; `exp`, `aud` and `iss` are
 * required; `sub` names the principal. Tenancy fails closed: an issuer with
 * a tenant claim refuses tokens without a valid one, and an issuer's tokens
 * may carry only its allowed roles and tenants (a token claiming more is
 * refused whole, not trimmed, so a misissued token shows up in the log).
 */
export function createJwtVerifier(issuers: readonly JwtIssuer[], clock: Clock): JwtVerifier {
  const byIssuer = new Map(
    issuers.map((i) => {
      const keys: JWK[] = [...(i.jwks?.keys ?? [])];
      for (const pem of i.publicKeyPems)
        keys.push(createPublicKey(pem).export({ format: "jwk" }) as JWK);
      return [i.issuer, { config: i, keys: createLocalJWKSet({ keys }) }] as const;
    }),
  );
  return {
    async verify(token, atMs) {
      const judgedAt = atMs ?? clock.now();
      let iss: unknown;
      try {
        iss = decodeJwt(token).iss;
      } catch {
        return { failure: "not a decodable JWT" };
      }
      const issuer = typeof iss === "string" ? byIssuer.get(iss) : undefined;
      if (issuer === undefined)
        return { failure: `untrusted issuer ${JSON.stringify(String(iss)).slice(0, 80)}` };
      const c = issuer.config;
      try {
        const { payload } = await jwtVerify(token, issuer.keys, {
          algorithms: [...c.algorithms],
          issuer: c.issuer,
          audience: c.audience,
          requiredClaims: ["exp", "sub"],
          clockTolerance: c.clockSkewSeconds,
          currentDate: new Date(judgedAt),
        });
        if (typeof payload.sub !== "string" || payload.sub === "" || payload.sub.length > 256)
          return { failure: "bad sub" };
        const rolesClaim = payload[c.rolesClaim];
        const roles = Array.isArray(rolesClaim)
          ? rolesClaim.filter((r): r is string => typeof r === "string")
          : [];
        const extra = roles.find(
          (r) => c.allowedRoles !== undefined && !c.allowedRoles.includes(r),
        );
        if (extra !== undefined)
          return {
            failure: `role ${JSON.stringify(extra.slice(0, 64))} not allowed for this issuer`,
          };
        let tenant: string | undefined;
        if (c.tenantClaim !== undefined) {
          const claimed = payload[c.tenantClaim];
          if (typeof claimed !== "string" || !isTenantName(claimed))
            return { failure: `missing or invalid ${c.tenantClaim} claim` };
          if (c.allowedTenants !== undefined && !c.allowedTenants.includes(claimed))
            return { failure: `tenant ${claimed} not allowed for this issuer` };
          tenant = claimed;
        }
        // As verify() judges it: `exp` plus the skew it tolerates.
        const expiresAtMs =
          typeof payload.exp === "number" ? (payload.exp + c.clockSkewSeconds) * 1000 : undefined;
        return {
          identity: {
            subject: payload.sub,
            issuer: c.issuer,
            roles,
            tenant,
            expiresAtMs,
            verifiedAtMs: judgedAt,
          },
        };
      } catch (err) {
        return { failure: (err as { code?: string }).code ?? (err as Error).message };
      }
    },
  };
}
