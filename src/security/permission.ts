/** A permission: colon-separated lower-case segments, `node:list`, `storage:snapshot:create`. */
const PERMISSION = /^[a-z][a-z0-9-]*(:[a-z][a-z0-9-]*)*$/;
/** A grant: a permission, or one ending in `:*`, or `*` alone. */
const GRANT = /^(\*|[a-z][a-z0-9-]*(:[a-z][a-z0-9-]*)*(:\*)?)$/;

/** True for a well-formed permission (what a method requires). */
export function isPermission(text: string): boolean {
  return text.length <= 128 && PERMISSION.test(text);
}

/** True for a well-formed grant (what a role holds). */
export function isGrant(text: string): boolean {
  return text.length <= 128 && GRANT.test(text);
}

/**
 * Whether `grant` covers `permission`, segment by segment: `*` covers
 * everything; `a:b:*` covers `a:b` and every permission under `a:b:`, never
 * `a:bx`; anything else covers only itself.
 */
export function permissionMatches(grant: string, permission: string): boolean {
  if (grant === "*") return true;
  if (grant.endsWith(":*")) {
    const base = grant.slice(0, -2);
    return permission === base || permission.startsWith(`${base}:`);
  }
  return grant === permission;
}

/** Whether holding `held` grants covers everything `wanted` would grant (no escalation). */
export function grantsCover(held: readonly string[], wanted: string): boolean {
  if (held.some((h) => h === "*")) return true;
  if (wanted === "*") return false;
  // A wildcard is covered only by a wildcard at or above it: a:* by a:* or *.
  if (wanted.endsWith(":*")) {
    const base = wanted.slice(0, -2);
    return held.some((h) => h.endsWith(":*") && permissionMatches(h, base));
  }
  return held.some((h) => permissionMatches(h, wanted));
}
