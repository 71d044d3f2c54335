// The response headers every answer of the panel's listener carries: a strict
// Content-Security-Policy and the browser hardening headers around it.

/**
 * The panel's Content-Security-Policy: only its own bundled script and
 * stylesheet, no inline script or style, no framing, calls only to itself.
 */
export const PANEL_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/** Headers on every panel response: {@link PANEL_CSP} plus no sniffing, no referrer, same-origin only, HSTS. */
export const PANEL_SECURITY_HEADERS = {
  "content-security-policy": PANEL_CSP,
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
  "strict-transport-security": "max-age=31536000",
  "permissions-policy": "camera=(), microphone=(), geolocation=()",
};
