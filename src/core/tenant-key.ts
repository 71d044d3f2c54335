import { RpcError } from "./rpc-error.js";

/** Tenant names that are their own binding-key segment: letters, digits, '.', '_', '-', starting with a letter or digit. */
const PLAIN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/**
 * What no tenant name holds: control characters, line and paragraph
 * separators, lone surrogates, and the characters that hide or reorder text
 * without showing (bidi marks, embeddings, overrides and isolates; zero-width
 * space, word joiner and invisible operators; the byte-order mark; the
 * combining grapheme joiner; Hangul and Mongolian fillers). The zero-width
 * (non-)joiners and tag characters stay: written Persian and emoji sequences
 * need them.
 */
const HIDDEN =
  /[\p{Cc}\p{Zl}\p{Zp}\p{Cs}\u061c\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\u115f\u1160\u3164\uffa0\u180e]|\u034f/u;
/** Whitespace that would make `acme ` and `acme` two tenants. */
const EDGE_SPACE = /^\s|\s$/u;

/**
 * Whether `tenant` can be a tenant's name: 1 to 64 characters (UTF-16
 * units, as the protos' max_len counts), no white space at either end, and
 * none of the characters in HIDDEN. The one rule of config bindings, token
 * claims, stored bindings, and the API's requests that name a tenant (a
 * pattern in their protos). It keeps names from hiding or reordering text
 * and from breaking a log line; it cannot keep two scripts' letters from
 * looking alike (Latin `acme` and Cyrillic `аcme` are two tenants), and
 * names are compared as written (a composed and a decomposed `é` differ).
 */
export function isTenantName(tenant: string): boolean {
  return (
    tenant.length > 0 && tenant.length <= 64 && !HIDDEN.test(tenant) && !EDGE_SPACE.test(tenant)
  );
}

/** Refuses (INVALID_ARGUMENT) a name that is not {@link isTenantName}. */
export function assertTenantName(tenant: string): void {
  if (!isTenantName(tenant))
    throw new RpcError("INVALID_ARGUMENT", {
      message:
        "tenant: 1 to 64 characters, without white space at either end or characters that hide or reorder text",
    });
}

/** `~` and the tenant's UTF-8 in base64url: printable ASCII with no '/' or ':'. */
export function encodedTenant(tenant: string): string {
  let binary = "";
  for (const b of new TextEncoder().encode(tenant)) binary += String.fromCharCode(b);
  return `~${btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "")}`;
}

/**
 * The tenant an {@link encodedTenant} segment names, or undefined when
 * `segment` is not one (an earlier version's raw name that starts with '~').
 */
export function decodedTenant(segment: string): string | undefined {
  if (!/^~[A-Za-z0-9_-]+$/.test(segment)) return undefined;
  try {
    const binary = atob(segment.slice(1).replace(/-/g, "+").replace(/_/g, "/"));
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    const tenant = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    return encodedTenant(tenant) === segment && isTenantName(tenant) ? tenant : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A tenant's segment in a binding's store key (`rbac/bindings/<segment>/`):
 * a plain name is its own segment (as it always was), any other
 * {@link encodedTenant}, which no plain name can be; keys stay printable
 * ASCII, and distinct names give distinct segments.
 */
export function tenantKeySegment(tenant: string): string {
  return PLAIN.test(tenant) ? tenant : encodedTenant(tenant);
}
