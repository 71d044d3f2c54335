import { RpcError } from "./rpc-error.js";

/** Tenant names that are their own key segment: letters, digits, '.', '_', '-', starting with a letter or digit. */
const PLAIN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** Control (Cc) and format (Cf: bidi overrides, zero-width) characters, and lone surrogates (Cs). */
const HIDDEN = /[\p{Cc}\p{Cf}\p{Cs}]/u;

/**
 * A tenant's segment in store keys and stored ids (`rbac/bindings/<segment>/`,
 * a replication job's `<segment>:<id>`). A tenant may be any name a config
 * binding, a VM or an API key can name, but keys are printable ASCII without
 * '/' or ':' in a segment, so a plain name is its own segment (as it always
 * was) and any other is `~` and its UTF-8 in base64url, which no plain name
 * can be. Distinct well-formed names give distinct segments.
 */
export function tenantKeySegment(tenant: string): string {
  if (PLAIN.test(tenant)) return tenant;
  const bytes = new TextEncoder().encode(tenant);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return `~${btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "")}`;
}

/**
 * Whether `tenant` can be a tenant's name: 1 to 64 characters (UTF-16
 * units, as the protos' max_len counts), well-formed (no lone surrogate,
 * which would share its encoding with another), and free of control and
 * format characters (bidi overrides, zero-width: names that look alike but
 * differ). The one rule of config bindings, token claims, stored bindings,
 * and the API's requests that name a tenant (a pattern in their protos).
 */
export function isTenantName(tenant: string): boolean {
  return tenant.length > 0 && tenant.length <= 64 && !HIDDEN.test(tenant);
}

/** Refuses (INVALID_ARGUMENT) a name that is not {@link isTenantName}. */
export function assertTenantName(tenant: string): void {
  if (!isTenantName(tenant))
    throw new RpcError("INVALID_ARGUMENT", {
      message:
        "tenant: 1 to 64 characters, none of them a control or invisible formatting character",
    });
}
