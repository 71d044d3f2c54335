// The login page's OpenID Connect part: the "Sign in with <issuer>" link and
// the message a refused sign-in comes back with (?signin_error=<REASON>).
// Only reason codes travel in the URL; the words are the page's own.

import { authGet } from "./api.js";
import { el } from "./dom.js";

const MESSAGES: Record<string, string> = {
  OIDC_SIGN_IN_EXPIRED:
    "That sign-in expired, was already used, or was started in another browser. Sign in again.",
  OIDC_ISSUER_REFUSED: "The identity provider refused the sign-in.",
  OIDC_TOKEN_INVALID: "The identity provider's answer failed verification; nobody was signed in.",
  OIDC_ISSUER_UNAVAILABLE: "The identity provider could not be reached; try again later.",
  OIDC_NO_ROLES:
    "You signed in at the identity provider, but no role is bound to your account here.",
  OIDC_TOO_MANY_SIGN_INS:
    "Too many sign-ins are in progress from your network; finish one or try again in a few minutes.",
  RATE_LIMITED: "Too many sign-in attempts; wait a minute and try again.",
};

/**
 * The message of a refused sign-in named in the address, or "". The query
 * is removed from the address so a reload does not show it again.
 */
export function signInErrorFromAddress(): string {
  const q = new URLSearchParams(location.search);
  const reason = q.get("signin_error");
  if (reason === null) return "";
  history.replaceState(null, "", `/${location.hash}`);
  const text = MESSAGES[reason] ?? "Sign-in failed.";
  const principal = q.get("principal") ?? "";
  const bind =
    reason === "OIDC_NO_ROLES" && /^oidc:[\x21-\x7e]{1,250}$/.test(principal)
      ? ` An administrator can bind a role to ${principal}.`
      : "";
  return `${text}${bind} (${/^[A-Z_]{1,40}$/.test(reason) ? reason : "SIGN_IN_FAILED"})`;
}

/** Adds "Sign in with <name>" under the form when the panel has an OpenID Connect issuer. */
export async function addOidcSignIn(form: HTMLElement): Promise<void> {
  const name = (await authGet("providers"))?.oidc;
  if (typeof name !== "string") return;
  form.append(
    el("p", { class: "or" }, "or"),
    el(
      "a",
      { href: "/auth/oidc/start", class: "button", "data-testid": "oidc-sign-in" },
      `Sign in with ${name}`,
    ),
  );
}
