// The cookies a panel session travels in: the access and refresh tokens set
// with their lifetimes, and the pair that clears them on the way out.

import type { Clock } from "../core/index.js";
import { COOKIES, setCookie } from "./panel-cookies.js";

/** The tokens of a started or refreshed session, as far as its cookies need them. */
export interface SessionCookieTokens {
  accessToken: string;
  refreshToken: string;
  accessExpiresAtMs: number;
  sessionExpiresAtMs: number;
}

/** Builds a session's cookies; `cleared` is built once and shared by every answer. */
export interface SessionCookies {
  /**
   * The access and refresh cookies, each living until its token expires (by
   * `clock`); the access cookie alone when the refresh token is empty (a
   * refresh within the reuse grace: the refresh cookie stays as it is).
   */
  issue(t: SessionCookieTokens): string[];
  /** Both cookies, emptied and expired. */
  readonly cleared: string[];
}

/** Creates the session cookie builder on `clock`. */
export function createSessionCookies(clock: Clock): SessionCookies {
  const issue = (t: SessionCookieTokens) => {
    const now = clock.now();
    const access = setCookie(COOKIES.access, t.accessToken, t.accessExpiresAtMs - now);
    return t.refreshToken === ""
      ? [access]
      : [access, setCookie(COOKIES.refresh, t.refreshToken, t.sessionExpiresAtMs - now)];
  };
  const cleared = [setCookie(COOKIES.access, "", 0), setCookie(COOKIES.refresh, "", 0)];
  return { issue, cleared };
}
