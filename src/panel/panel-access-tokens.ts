// The panel's tokens: ES256 access tokens (issuer `debvisor-panel`) signed
// with a key made at start-up, the refresh tokens issued beside them, and
// reading a token's session id without verifying it.

import { createHash, generateKeyPairSync, randomBytes } from "node:crypto";
import { importPKCS8, SignJWT } from "jose";
import type { Clock } from "../core/index.js";
import type { PanelSessionRecord } from "../gen/debvisor/store/v1/panel_records_pb.js";
import { createJwtVerifier, type JwtVerifier } from "../security/index.js";
import { SID, sessionPrincipal } from "./panel-session-records.js";

/** `iss` of the panel's access tokens; no configured issuer can mint them. */
export const PANEL_ISSUER = "debvisor-panel";
const AUDIENCE = "debvisor-rpc";

/** Tokens handed to a browser, only ever in httpOnly cookies. */
export interface SessionTokens {
  readonly sessionId: string;
  readonly accessToken: string;
  /** Empty for a refresh within the reuse grace: the browser keeps the successor it holds. */
  readonly refreshToken: string;
  readonly accessExpiresAtMs: number;
  readonly sessionExpiresAtMs: number;
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

/** Hex SHA-256: how refresh tokens are kept (never the token itself). */
export const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

/**
 * The session a token belongs to, read without verifying it: a refresh
 * token's prefix or an access token's `sid` claim; undefined unless it has
 * the shape of a session id.
 */
export function sessionIdOf(token: string): string | undefined {
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
}

/** Issues and verifies the panel's tokens with this process's key. */
export interface PanelAccessTokens {
  /** Signature, issuer, audience and expiry only; whether the session is live is the caller's to ask. */
  readonly verifier: JwtVerifier;
  /**
   * New access and refresh tokens for a session (access capped at the
   * session's end and at `notAfterMs` when given), and the refresh token's hash.
   */
  issue(
    record: PanelSessionRecord,
    notAfterMs?: number,
  ): Promise<{ tokens: SessionTokens; refreshHash: string }>;
}

/**
 * Makes a fresh ES256 key (a restart only costs a refresh) and returns the
 * tokens' issuer and verifier; access tokens live `accessTtlMs`.
 */
export async function createPanelAccessTokens(
  clock: Clock,
  accessTtlMs: number,
): Promise<PanelAccessTokens> {
  const pair = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const signingKey = await importPKCS8(
    pair.privateKey.export({ format: "pem", type: "pkcs8" }).toString(),
    "ES256",
  );
  const verifier = createJwtVerifier(
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

  async function issue(
    record: PanelSessionRecord,
    notAfterMs = Number.POSITIVE_INFINITY,
  ): Promise<{ tokens: SessionTokens; refreshHash: string }> {
    const now = clock.now();
    const accessExpiresAtMs = Math.min(now + accessTtlMs, Number(record.expiresAtMs), notAfterMs);
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

  return { verifier, issue };
}
