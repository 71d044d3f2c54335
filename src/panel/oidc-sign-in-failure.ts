// How an OpenID Connect sign-in fails: the failure with its reason, the
// mapping of what openid-client threw onto one, and the refusal that audits
// it (recorded, or counted when anyone can repeat it) and sends the browser
// back to the sign-in page with the reason.

import * as client from "openid-client";
import type { Logger, Reason } from "../core/index.js";
import type { PanelAuthAudit } from "./panel-auth-audit.js";

/** Where to send the browser next, and the cookies to set on the way. */
export interface OidcRedirect {
  readonly location: string;
  readonly cookies: readonly string[];
}

/** A refused sign-in: a catalogue reason for the page, a detail for operators (never a token). */
export class SignInFailure extends Error {
  constructor(
    readonly reason: Reason,
    readonly detail: string,
    readonly principal = "",
    /** The sign-in in progress stays usable (its flow cookie is not cleared). */
    readonly keepsFlow = false,
  ) {
    super(detail);
  }
}

const TOKEN_CHECKS = new Set<string>([
  "OAUTH_JWT_TIMESTAMP_CHECK_FAILED",
  "OAUTH_JWT_CLAIM_COMPARISON_FAILED",
  "OAUTH_JSON_ATTRIBUTE_COMPARISON_FAILED",
  "OAUTH_KEY_SELECTION_FAILED",
  "OAUTH_INVALID_RESPONSE",
  "OAUTH_PARSE_ERROR",
]);
const AUDIT_CODE: Partial<Record<Reason, string>> = {
  RATE_LIMITED: "RESOURCE_EXHAUSTED",
  OIDC_TOO_MANY_SIGN_INS: "RESOURCE_EXHAUSTED",
  OIDC_ISSUER_UNAVAILABLE: "UNAVAILABLE",
  OIDC_NO_ROLES: "PERMISSION_DENIED",
  INTERNAL: "INTERNAL",
};
const printable = (s: unknown, max = 120) =>
  String(s)
    .replace(/[^\x20-\x7e]/g, "?")
    .slice(0, max);

/** Maps what openid-client threw to a reason and an operator's detail (never a token). */
export function classify(err: unknown): SignInFailure {
  if (err instanceof SignInFailure) return err;
  if (err instanceof client.AuthorizationResponseError)
    return new SignInFailure(
      "OIDC_ISSUER_REFUSED",
      `issuer answered error=${printable(err.error, 64)}`,
    );
  if (err instanceof client.ResponseBodyError)
    return new SignInFailure(
      "OIDC_ISSUER_REFUSED",
      `token endpoint answered ${err.status} ${printable(err.error, 64)}`,
    );
  const code = (err as { code?: unknown }).code;
  const message = printable((err as Error).message);
  const cause = (err as { cause?: { code?: unknown; message?: unknown; claim?: unknown } }).cause;
  if (typeof code === "string" && TOKEN_CHECKS.has(code)) {
    // Name the failed check (a claim's name, or the underlying error), never the token.
    const which =
      typeof cause?.claim === "string"
        ? ` (${printable(cause.claim, 32)})`
        : cause instanceof Error
          ? ` (${printable(cause.message, 80)})`
          : "";
    return new SignInFailure("OIDC_TOKEN_INVALID", `ID token refused: ${message}${which}`);
  }
  const why = cause === undefined ? message : printable(cause.code ?? cause.message);
  return new SignInFailure("OIDC_ISSUER_UNAVAILABLE", `issuer unreachable: ${why}`);
}

/** What {@link createOidcRefusal} needs. */
export interface OidcRefusalOptions {
  readonly audit: PanelAuthAudit;
  /** The audit fields every OpenID Connect sign-in shares (method, issuer). */
  readonly signIn: { readonly authMethod: string; readonly method: string; readonly args: string };
  /** The Set-Cookie that clears the flow cookie. */
  readonly clearFlow: string;
  readonly logger: Logger;
}

/**
 * Returns the refusal: audits and logs `f`, then redirects to `/?signin_error=<reason>`
 * (with the principal to bind, when known), clearing the flow cookie unless it is kept.
 */
export function createOidcRefusal(
  o: OidcRefusalOptions,
): (f: SignInFailure, source: string) => Promise<OidcRedirect> {
  const { audit, signIn, clearFlow } = o;
  return async (f, source) => {
    const outcome = {
      ...signIn,
      principal: f.principal,
      peer: source,
      code: AUDIT_CODE[f.reason] ?? "UNAUTHENTICATED",
      decision: f.reason === "OIDC_NO_ROLES" ? "deny" : "unauthenticated",
    };
    // Counted past the throttle (anyone can repeat it at will); the throttle bounds the rest.
    if (f.reason === "RATE_LIMITED") audit.count({ ...outcome, reason: f.reason, error: f.detail });
    else await audit.record({ ...outcome, reason: f.detail, error: f.reason });
    o.logger.info({ reason: f.reason, detail: f.detail, peer: source }, "panel sign-in refused");
    const q = new URLSearchParams({ signin_error: f.reason });
    if (f.principal !== "") q.set("principal", f.principal);
    return { location: `/?${q}`, cookies: f.keepsFlow ? [] : [clearFlow] };
  };
}
