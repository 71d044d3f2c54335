// The panel's OpenID Connect sign-in (authorization code with PKCE): start
// sends the browser to the issuer, callback checks its answer and starts a
// session. Discovery is in oidc-discovery.ts, failures and their audit in
// oidc-sign-in-failure.ts.

import { timingSafeEqual } from "node:crypto";
import * as client from "openid-client";
import type { Logger } from "../core/index.js";
import { type AccessPolicy, bindingsOf } from "../security/index.js";
import type { LoginThrottle } from "./login-throttle.js";
import { createOidcDiscovery } from "./oidc-discovery.js";
import {
  classify,
  createOidcRefusal,
  type OidcRedirect,
  SignInFailure,
} from "./oidc-sign-in-failure.js";
import {
  createPanelAuthAudit,
  type PanelAuditSink,
  recordSessionLimit,
} from "./panel-auth-audit.js";
import { COOKIES, setCookie, setLaxCookie } from "./panel-cookies.js";
import type { PanelSessions } from "./panel-sessions.js";
import { createPendingFlows } from "./pending-flows.js";

export type { OidcRedirect } from "./oidc-sign-in-failure.js";

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

/**
 * Creates the OpenID Connect relying party of the panel (openid-client).
 * The issuer is discovered on first use (and again after a failure), so a
 * daemon starts while its issuer is down. Each sign-in's state, nonce and
 * PKCE verifier stay in this process, found by a random id in a short-lived
 * httpOnly cookie of the browser that started it, and are used once; each
 * source group has a bounded share of them.
 */
export function createOidcSignIn(o: OidcSignInOptions): OidcSignIn {
  const configuration = createOidcDiscovery(o);
  const flows = createPendingFlows<Flow>(o.now, {
    ttlMs: FLOW_TTL_MS,
    perSource: o.pendingPerSource ?? FLOWS_PER_SOURCE,
    total: o.pendingTotal ?? MAX_FLOWS,
  });
  const audit = createPanelAuthAudit(o.audit);
  const signIn = { authMethod: "oidc", method: "Login", args: `issuer=${o.issuer}` };
  const clearFlow = setLaxCookie(COOKIES.oidc, "", 0);
  const refuse = createOidcRefusal({ audit, signIn, clearFlow, logger: o.logger });
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
        await recordSessionLimit(audit, principal, source, t);
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
