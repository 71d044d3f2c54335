import { timingSafeEqual } from "node:crypto";
import * as client from "openid-client";
import type { Logger, Reason } from "../core/index.js";
import { type AccessPolicy, bindingsOf } from "../security/index.js";
import { createIssuerFetch } from "./issuer-fetch.js";
import type { LoginThrottle } from "./login-throttle.js";
import { createPanelAuthAudit, type PanelAuditSink } from "./panel-auth-audit.js";
import { COOKIES, setCookie, setLaxCookie } from "./panel-cookies.js";
import type { PanelSessions } from "./panel-sessions.js";
import { createPendingFlows } from "./pending-flows.js";

/** How long a started sign-in may take at the issuer before its callback is refused. */
const FLOW_TTL_MS = 600_000;
/** Sign-ins in progress at once from one source group (an IPv4 address, an IPv6 /64). */
const FLOWS_PER_SOURCE = 32;
/** Sign-ins in progress at once in all. */
const MAX_FLOWS = 10_000;

/** Options of {@link createOidcSignIn}: `panel.oidc` with the secret read, plus the panel's parts. */
export interface OidcSignInOptions {
  /** Issuer URL, exactly as its ID tokens' `iss` (https). */
  readonly issuer: string;
  /** Shown on the sign-in page: "Sign in with <name>". */
  readonly name: string;
  readonly clientId: string;
  /** Undefined: a public client (PKCE alone). Never logged. */
  readonly clientSecret: string | undefined;
  /** This panel's /auth/oidc/callback as registered at the issuer. */
  readonly redirectUrl: string;
  readonly scopes: readonly string[];
  /** ID token claim naming the person (default `sub`). */
  readonly principalClaim: string;
  /** PEM bundle trusted for the issuer's TLS; undefined: the system's. */
  readonly caPem: string | undefined;
  readonly sessions: PanelSessions;
  readonly throttle: LoginThrottle;
  readonly policy: () => AccessPolicy;
  readonly audit: PanelAuditSink | undefined;
  readonly logger: Logger;
  readonly now: () => number;
  /** Sign-ins in progress per source group (default 32); the next start is refused. */
  readonly pendingPerSource?: number;
  /** Sign-ins in progress in all (default 10,000); the next start is refused. */
  readonly pendingTotal?: number;
}

/** Where to send the browser next, and the cookies to set on the way. */
export interface OidcRedirect {
  readonly location: string;
  readonly cookies: readonly string[];
}

/** OpenID Connect sign-in (authorization code with PKCE) for the panel. */
export interface OidcSignIn {
  readonly name: string;
  /** GET /auth/oidc/start: remembers state, nonce and verifier for this browser, sends it to the issuer. */
  start(source: string): Promise<OidcRedirect>;
  /** GET /auth/oidc/callback?...: checks everything, then starts the same session a password does. */
  callback(query: string, source: string, cookies: Map<string, string>): Promise<OidcRedirect>;
}

/** The principal of a person signed in at `issuer`: `oidc:<issuer>#<claim value>`. */
export function oidcPrincipal(issuer: string, value: string): string {
  return `oidc:${issuer}#${value}`;
}

interface Flow {
  readonly state: string;
  readonly nonce: string;
  readonly verifier: string;
}

class SignInFailure extends Error {
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
function classify(err: unknown): SignInFailure {
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

/**
 * Creates the OpenID Connect relying party of the panel (openid-client).
 * The issuer is discovered on first use (and again after a failure), so a
 * daemon starts while its issuer is down. Each sign-in's state, nonce and
 * PKCE verifier stay in this process, found by a random id in a short-lived
 * httpOnly cookie of the browser that started it, and are used once; each
 * source group has a bounded share of them.
 */
export function createOidcSignIn(o: OidcSignInOptions): OidcSignIn {
  const fetch = createIssuerFetch(o.caPem);
  const flows = createPendingFlows<Flow>(o.now, {
    ttlMs: FLOW_TTL_MS,
    perSource: o.pendingPerSource ?? FLOWS_PER_SOURCE,
    total: o.pendingTotal ?? MAX_FLOWS,
  });
  let discovered: Promise<client.Configuration> | undefined;
  const configuration = () => {
    discovered ??= client
      .discovery(
        new URL(o.issuer),
        o.clientId,
        undefined,
        o.clientSecret === undefined ? client.None() : client.ClientSecretBasic(o.clientSecret),
        // The ID token's signature is checked against the issuer's JWKS even though it came over TLS.
        { execute: [client.enableNonRepudiationChecks], [client.customFetch]: fetch, timeout: 10 },
      )
      .catch((err: unknown) => {
        discovered = undefined;
        throw err;
      });
    return discovered;
  };
  const audit = createPanelAuthAudit(o.audit);
  const signIn = { authMethod: "oidc", method: "Login", args: `issuer=${o.issuer}` };
  const clearFlow = setLaxCookie(COOKIES.oidc, "", 0);
  const refuse = async (f: SignInFailure, source: string): Promise<OidcRedirect> => {
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
  const throttled = (source: string) => {
    const v = o.throttle.checkAddress(source);
    if (!v.allowed)
      throw new SignInFailure("RATE_LIMITED", `too many sign-in attempts per ${v.scope}`);
  };

  return {
    name: o.name,
    async start(source) {
      try {
        throttled(source);
        const config = await configuration();
        const verifier = client.randomPKCECodeVerifier();
        const flow: Flow = {
          state: client.randomState(),
          nonce: client.randomNonce(),
          verifier,
        };
        const url = client.buildAuthorizationUrl(config, {
          redirect_uri: o.redirectUrl,
          scope: o.scopes.join(" "),
          state: flow.state,
          nonce: flow.nonce,
          code_challenge: await client.calculatePKCECodeChallenge(verifier),
          code_challenge_method: "S256",
        });
        // Kept last, with nothing awaited after: a failed start holds no place.
        const kept = flows.add(source, flow);
        // Refused, the browser's sign-in in progress (if any) stays usable.
        if ("refused" in kept)
          throw new SignInFailure(
            "OIDC_TOO_MANY_SIGN_INS",
            kept.refused === "source"
              ? `${kept.pending} sign-ins in progress from ${kept.group}`
              : `${kept.pending} sign-ins in progress in all`,
            "",
            true,
          );
        return {
          location: url.href,
          cookies: [setLaxCookie(COOKIES.oidc, kept.id, FLOW_TTL_MS)],
        };
      } catch (err) {
        return refuse(classify(err), source);
      }
    },

    async callback(query, source, cookies) {
      try {
        throttled(source);
        const id = cookies.get(COOKIES.oidc) ?? "";
        const pending = flows.get(id);
        if (pending === undefined || pending.expiresAtMs <= o.now()) {
          flows.delete(id);
          throw new SignInFailure(
            "OIDC_SIGN_IN_EXPIRED",
            pending === undefined ? "no sign-in in progress in this browser" : "sign-in expired",
          );
        }
        const flow = pending.value;
        const url = new URL(o.redirectUrl);
        url.search = query;
        const state = Buffer.from(url.searchParams.get("state") ?? "");
        const want = Buffer.from(flow.state);
        // A wrong state leaves the flow alone: a link from another site (the flow cookie is
        // SameSite=Lax) must not cancel the sign-in this browser has in progress.
        if (state.length !== want.length || !timingSafeEqual(state, want))
          throw new SignInFailure(
            "OIDC_SIGN_IN_EXPIRED",
            "state is not this browser's sign-in",
            "",
            true,
          );
        // Used once from here, whatever happens next: a replayed callback finds nothing.
        flows.delete(id);
        const tokens = await client.authorizationCodeGrant(await configuration(), url, {
          pkceCodeVerifier: flow.verifier,
          expectedState: flow.state,
          expectedNonce: flow.nonce,
          idTokenExpected: true,
        });
        const value = tokens.claims()?.[o.principalClaim];
        if (typeof value !== "string" || !/^[\x21-\x7e]{1,200}$/.test(value))
          throw new SignInFailure(
            "OIDC_TOKEN_INVALID",
            `ID token has no usable ${o.principalClaim} claim`,
          );
        const principal = oidcPrincipal(o.issuer, value);
        if (principal.length > 256)
          throw new SignInFailure("OIDC_TOKEN_INVALID", "principal longer than 256 characters");
        if (bindingsOf(o.policy(), principal).roles.length === 0)
          throw new SignInFailure("OIDC_NO_ROLES", "no role is bound to the principal", principal);
        const t = await o.sessions.start(principal, source, principal).catch((err: unknown) => {
          // The store, not the issuer: say so, not "issuer unreachable".
          o.logger.error({ err }, "panel session could not start");
          throw new SignInFailure("INTERNAL", "session could not start");
        });
        await audit.record({
          ...signIn,
          principal,
          peer: source,
          code: "OK",
          decision: "allow",
          reason: "openid connect",
          args: `issuer=${o.issuer} session=${t.sessionId}`,
        });
        const now = o.now();
        return {
          location: "/",
          cookies: [
            clearFlow,
            setCookie(COOKIES.access, t.accessToken, t.accessExpiresAtMs - now),
            setCookie(COOKIES.refresh, t.refreshToken, t.sessionExpiresAtMs - now),
          ],
        };
      } catch (err) {
        return refuse(classify(err), source);
      }
    },
  };
}
