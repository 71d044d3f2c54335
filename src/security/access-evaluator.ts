import { type Principal, type ResourceRef, RpcError } from "../core/index.js";
import { grantsCover, permissionMatches } from "./permission.js";
import { BUILT_IN_ROLES, type Role, SELF_ONLY_ROLES } from "./roles.js";

/** A principal bound to roles, cluster-wide or within one tenant. */
export interface Binding {
  readonly principal: string;
  readonly roles: readonly string[];
  /** Undefined: cluster-wide. */
  readonly tenant?: string;
}

/** The roles and bindings in force; read on every decision, so changes apply at once. */
export interface AccessPolicy {
  readonly roles: ReadonlyMap<string, Role>;
  readonly bindings: readonly Binding[];
}

/** An authorization decision and the rule that made it. */
export interface Decision {
  readonly allowed: boolean;
  /** The deciding rule (`role operator grants node:*`) or the closest miss; for operators, never for clients. */
  readonly reason: string;
  /** The tenant the principal acts in; undefined is cluster-wide. */
  readonly tenant: string | undefined;
}

/** Builds a policy from custom roles and bindings on top of the built-in roles. */
export function createAccessPolicy(custom: {
  roles?: readonly { name: string; grants: readonly string[] }[];
  bindings?: readonly Binding[];
}): AccessPolicy {
  const roles = new Map<string, Role>(BUILT_IN_ROLES.map((r) => [r.name, r]));
  for (const r of custom.roles ?? []) {
    if (roles.get(r.name)?.builtIn)
      throw new TypeError(`role ${r.name} is built in and cannot be redefined`);
    roles.set(
      r.name,
      Object.freeze({ name: r.name, grants: Object.freeze([...r.grants]), builtIn: false }),
    );
  }
  return Object.freeze({ roles, bindings: Object.freeze([...(custom.bindings ?? [])]) });
}

/** The roles a principal holds: its own (API key, JWT claims) and its bindings'. */
export function rolesOf(
  policy: AccessPolicy,
  principal: Principal,
): { roles: string[]; tenant: string | undefined } {
  const roles = new Set(principal.roles);
  let tenant = principal.tenant;
  for (const b of policy.bindings) {
    if (b.principal !== principal.id) continue;
    for (const r of b.roles) roles.add(r);
    tenant ??= b.tenant;
  }
  return { roles: [...roles].sort(), tenant };
}

/**
 * Decides whether `principal` may use `permission` (default deny). A
 * `permission` of null means any authenticated principal. Self-only roles
 * grant only when the resource's node id is the principal's own id.
 */
export function decide(
  policy: AccessPolicy,
  principal: Principal,
  permission: string | null,
  resource: ResourceRef = {},
): Decision {
  const { roles, tenant } = rolesOf(policy, principal);
  if (permission === null) return { allowed: true, reason: "any authenticated principal", tenant };
  let closest: string | undefined;
  for (const name of roles) {
    const role = policy.roles.get(name);
    if (role === undefined) continue;
    const grant = role.grants.find((g) => permissionMatches(g, permission));
    if (grant === undefined) continue;
    if (
      SELF_ONLY_ROLES.has(name) &&
      resource.nodeId !== undefined &&
      resource.nodeId !== principal.id
    ) {
      closest = `role ${name} grants ${grant} only for node ${principal.id}, not ${resource.nodeId}`;
      continue;
    }
    return { allowed: true, reason: `role ${name} grants ${grant}`, tenant };
  }
  const held = roles.length === 0 ? "no roles" : `roles ${roles.join(", ")}`;
  return { allowed: false, reason: closest ?? `${held}: none grants ${permission}`, tenant };
}

/** The roles and tenant bindings give a principal, whatever credential it later uses. */
export function bindingsOf(
  policy: AccessPolicy,
  principal: string,
): { roles: string[]; tenant: string | undefined } {
  return rolesOf(policy, { id: principal, method: "none", roles: [] });
}

/**
 * Refuses (ESCALATION_DENIED) unless `caller` holds every grant of `roles`
 * and may act in `tenant`: a tenant-confined caller only within its own
 * tenant. Used wherever a key, binding, role, token or certificate would
 * give someone authority.
 */
export function assertCanGrant(
  policy: AccessPolicy,
  caller: Principal,
  roles: readonly string[],
  tenant: string | undefined,
): void {
  const held = rolesOf(policy, caller);
  const grants = held.roles.flatMap((r) => policy.roles.get(r)?.grants ?? []);
  for (const name of roles) {
    const role = policy.roles.get(name);
    if (role === undefined)
      throw new RpcError("INVALID_ARGUMENT", { message: `roles: unknown role ${name}` });
    const missing = role.grants.find((g) => !grantsCover(grants, g));
    if (missing !== undefined) {
      throw new RpcError("ESCALATION_DENIED", {
        cause: new Error(`role ${name} grants ${missing}, which ${caller.id} does not hold`),
      });
    }
  }
  if (held.tenant !== undefined && tenant !== held.tenant) {
    throw new RpcError("ESCALATION_DENIED", {
      cause: new Error(`${caller.id} is confined to tenant ${held.tenant}`),
    });
  }
}

/**
 * Refuses (ESCALATION_DENIED) unless `caller` could grant everything a
 * credential naming `target` would carry: the given roles plus every role
 * `target`'s bindings already hold. A key or certificate for "admin" is as
 * powerful as admin, so only someone holding all of that may make one.
 */
export function assertCanActAs(
  policy: AccessPolicy,
  caller: Principal,
  target: string,
  roles: readonly string[],
  tenant: string | undefined,
): void {
  const bound =
    target === caller.id ? { roles: [], tenant: undefined } : bindingsOf(policy, target);
  assertCanGrant(policy, caller, [...new Set([...roles, ...bound.roles])], tenant ?? bound.tenant);
}
