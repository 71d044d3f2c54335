// The web panel's server side: people (local users, argon2id), their sign-in
// sessions (short access token, rotating refresh token), sign-in throttling
// and the /auth endpoints. Calls from the panel then go through the same
// stages as gRPC, by way of the connect adapter in server.

export type { LoginThrottle, LoginThrottleOptions } from "./login-throttle.js";
export { createLoginThrottle } from "./login-throttle.js";
export type { OidcRedirect, OidcSignIn, OidcSignInOptions } from "./oidc-sign-in.js";
export { createOidcSignIn, oidcPrincipal } from "./oidc-sign-in.js";
export type { SessionTokens } from "./panel-access-tokens.js";
export { PANEL_ISSUER, withPanelIssuer } from "./panel-access-tokens.js";
export type {
  AuthRequest,
  AuthResponse,
  PanelAuditSink,
  PanelAuth,
  PanelAuthOptions,
} from "./panel-auth.js";
export { createPanelAuth, MANAGE_USERS } from "./panel-auth.js";
export {
  COOKIES,
  CSRF_HEADER,
  isPanelRequest,
  parseCookies,
  setCookie,
  setLaxCookie,
} from "./panel-cookies.js";
export { sessionPrincipal } from "./panel-session-records.js";
export type { PanelSessions, PanelSessionsOptions, StartedSession } from "./panel-sessions.js";
export {
  createPanelSessions,
  MAX_SESSIONS_PER_USER,
  REFRESH_REUSE_GRACE_MS,
} from "./panel-sessions.js";
export type { PanelUsers } from "./panel-users.js";
export { checkCredentials, createPanelUsers, userPrincipal } from "./panel-users.js";
export { hashPassword, verifyPassword } from "./password-hashing.js";
