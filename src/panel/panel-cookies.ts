/** Cookie names. `__Host-` pins them to this origin, path / and Secure. */
export const COOKIES = {
  access: "__Host-dv_access",
  refresh: "__Host-dv_refresh",
  device: "__Host-dv_device",
  /** The OpenID Connect sign-in in progress in this browser (SameSite=Lax: the issuer redirects back). */
  oidc: "__Host-dv_oidc",
} as const;

/** The header every panel call carries; a cross-site form or image cannot set it. */
export const CSRF_HEADER = "x-debvisor-csrf";

/** Parses a Cookie header; later duplicates lose, oversize input yields nothing. */
export function parseCookies(header: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (header === undefined || header.length > 16_384) return out;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq <= 0) continue;
    const name = part.slice(0, eq).trim();
    if (!out.has(name)) out.set(name, part.slice(eq + 1).trim());
  }
  return out;
}

/** A Set-Cookie value: httpOnly, Secure, SameSite=Strict, path /; `maxAgeMs` 0 clears it. */
export function setCookie(name: string, value: string, maxAgeMs: number): string {
  const maxAge = Math.max(0, Math.floor(maxAgeMs / 1000));
  return `${name}=${value}; Path=/; Max-Age=${maxAge}; HttpOnly; Secure; SameSite=Strict`;
}

/**
 * A Set-Cookie value like {@link setCookie}'s but SameSite=Lax, so that the
 * browser sends it on the issuer's redirect back (a cross-site top-level
 * GET). Only for the OpenID Connect flow cookie, which grants nothing alone.
 */
export function setLaxCookie(name: string, value: string, maxAgeMs: number): string {
  return setCookie(name, value, maxAgeMs).replace("SameSite=Strict", "SameSite=Lax");
}

/**
 * True when a request comes from the panel's own page: it carries the
 * panel's custom header (which no cross-site form, image or simple request
 * can, and which forces a CORS preflight this server never grants), and its
 * Origin is the panel's own. Browsers send Origin on every POST; a same-origin
 * GET may lack it, and then Sec-Fetch-Site, when sent, must say same-origin.
 * SameSite=Strict cookies are the first wall; this is the second and third.
 */
export function isPanelRequest(
  method: string,
  headers: { get(name: string): string | undefined },
  allowedOrigins: readonly string[],
): boolean {
  if (headers.get(CSRF_HEADER) !== "1") return false;
  const origin = headers.get("origin");
  if (origin !== undefined) return allowedOrigins.includes(origin);
  if (method !== "GET") return false;
  const site = headers.get("sec-fetch-site");
  return site === undefined || site === "same-origin";
}
