import { type Principal, type ResourceRef, RpcError, sameNode } from "../core/index.js";
import { grantsCover, permissionMatches } from "./permission.js";
import { BUILT_IN_ROLES, type Role, SELF_ONLY_ROLES } from "./roles.js";

/** A principal bound to roles, cluster-wide or within one tenant. */
export interface Binding {
  readonly principal: string;
  readonly roles: readonly string[];
  /** Undefined: cluster-wide (applies in every tenant too). */
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
  /** The scope that decided: a tenant, or undefined for cluster-wide. */
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

/**
 * The roles that hold for `principal` in one scope (Kubernetes'
 * `RulesFor(user, namespace)`): `tenant` undefined or "" is the cluster-wide
 * scope, which only cluster-wide bindings and an unconfined credential's own
 * roles reach; a tenant adds that tenant's bindings and nothing of any other
 * tenant. A credential confined to a tenant (an API key's, a JWT's claim)
 * holds nothing outside it.
 */
export function rolesIn(
  policy: AccessPolicy,
  principal: Principal,
  tenant: string | undefined,
): string[] {
  const scope = tenant === "" ? undefined : tenant;
  if (principal.tenant !== undefined && principal.tenant !== scope) return [];
  const roles = new Set(principal.roles);
  for (const b of policy.bindings) {
    if (b.principal !== principal.id) continue;
    if (b.tenant === undefined || b.tenant === scope) for (const r of b.roles) roles.add(r);
  }
  return [...roles].sort();
}

/** Each policy's bindings by principal, built once per policy (a policy is never changed, only replaced). */
const byPrincipal = new WeakMap<AccessPolicy, Map<string, Binding[]>>();

/** `policy`'s bindings of principal `id`, from an index built once per policy. */
function ownBindings(policy: AccessPolicy, id: string): readonly Binding[] {
  let index = byPrincipal.get(policy);
  if (index === undefined) {
    index = new Map();
    for (const b of policy.bindings) {
      const list = index.get(b.principal);
      if (list === undefined) index.set(b.principal, [b]);
      else list.push(b);
    }
    byPrincipal.set(policy, index);
  }
  return index.get(id) ?? [];
}

/**
 * The part of `policy` that decides for `principal`: its bindings and the
 * roles they and its credential name. Every decision for the principal comes
 * out as on the whole policy, and a call or stream that keeps it does not
 * keep every binding of the cluster alive (a policy per node enrolment,
 * kept by each node's stream, grew with the square of the nodes).
 */
export function policySlice(policy: AccessPolicy, principal: Principal): AccessPolicy {
  const bindings = ownBindings(policy, principal.id);
  const roles = new Map<string, Role>();
  for (const name of [...principal.roles, ...bindings.flatMap((b) => b.roles)]) {
    const role = policy.roles.get(name);
    if (role !== undefined) roles.set(name, role);
  }
  return { roles, bindings };
}

/**
 * What a principal may do, as one comparable string: its credential's roles
 * and tenant, its bindings, and the grants of every role they name. Equal
 * strings: every decision for the principal comes out the same. It reads
 * the principal's own bindings only (indexed per policy), so a policy change
 * costs each open stream little however many bindings there are.
 */
export function accessOf(policy: AccessPolicy, principal: Principal): string {
  // A credential confined to a tenant counts its cluster-wide bindings and that tenant's only.
  const own = ownBindings(policy, principal.id)
    .filter(
      (b) => principal.tenant === undefined || (b.tenant ?? principal.tenant) === principal.tenant,
    )
    .map((b) => [b.tenant ?? null, [...b.roles].sort()]);
  own.sort((x, y) => (JSON.stringify(x) < JSON.stringify(y) ? -1 : 1));
  const roles = new Set([...principal.roles, ...own.flatMap(([, r]) => r as string[])]);
  return JSON.stringify([
    principal.tenant ?? null,
    [...principal.roles].sort(),
    own,
    [...roles].sort().map((r) => [r, policy.roles.get(r)?.grants ?? null]),
  ]);
}

/** The tenants a principal holds bindings in (its credential's tenant alone when confined). */
export function tenantsOf(policy: AccessPolicy, principal: Principal): string[] {
  if (principal.tenant !== undefined) return [principal.tenant];
  const tenants = new Set<string>();
  for (const b of policy.bindings)
    if (b.principal === principal.id && b.tenant !== undefined) tenants.add(b.tenant);
  return [...tenants].sort();
}

/**
 * Every role a principal holds in some scope, and the one tenant it is
 * confined to (undefined when it holds anything cluster-wide, or roles in
 * several tenants). For display (WhoAmI); never for a decision (per-role
 * rate limits count only the roles held cluster-wide: `rolesIn`).
 */
export function rolesOf(
  policy: AccessPolicy,
  principal: Principal,
): { roles: string[]; tenant: string | undefined } {
  const tenants = tenantsOf(policy, principal);
  const roles = new Set(rolesIn(policy, principal, undefined));
  const clusterWide = principal.tenant === undefined && roles.size > 0;
  for (const t of tenants) for (const r of rolesIn(policy, principal, t)) roles.add(r);
  return {
    roles: [...roles].sort(),
    tenant: !clusterWide && tenants.length === 1 ? tenants[0] : undefined,
  };
}

/**
 * Decides whether `principal` may use `permission` in one scope (`tenant`
 * undefined: cluster-wide), default deny. A `permission` of null means any
 * authenticated principal. Self-only roles grant only when the resource's
 * node id is the principal's own id.
 */
export function decideIn(
  policy: AccessPolicy,
  principal: Principal,
  permission: string | null,
  resource: ResourceRef,
  tenant: string | undefined,
): Decision {
  const scope = tenant === "" ? undefined : tenant;
  if (permission === null)
    return { allowed: true, reason: "any authenticated principal", tenant: scope };
  const roles = rolesIn(policy, principal, scope);
  let closest: string | undefined;
  for (const name of roles) {
    const role = policy.roles.get(name);
    if (role === undefined) continue;
    const grant = role.grants.find((g) => permissionMatches(g, permission));
    if (grant === undefined) continue;
    if (
      SELF_ONLY_ROLES.has(name) &&
      resource.nodeId !== undefined &&
      !sameNode(resource.nodeId, principal.id)
    ) {
      closest = `role ${name} grants ${grant} only for node ${principal.id}, not ${resource.nodeId}`;
      continue;
    }
    const where = scope === undefined ? "" : ` in tenant ${scope}`;
    return { allowed: true, reason: `role ${name} grants ${grant}${where}`, tenant: scope };
  }
  const where = scope === undefined ? "" : ` in tenant ${scope}`;
  const held = roles.length === 0 ? "no roles" : `roles ${roles.join(", ")}`;
  return {
    allowed: false,
    reason: closest ?? `${held}${where}: none grants ${permission}`,
    tenant: scope,
  };
}

/**
 * Decides whether `principal` holds `permission` in some scope: cluster-wide
 * first, then each of its tenants; the decision names the scope that
 * granted it. The gate before a target is resolved, and CheckPermission.
 */
export function decide(
  policy: AccessPolicy,
  principal: Principal,
  permission: string | null,
  resource: ResourceRef = {},
): Decision {
  let first: Decision | undefined;
  for (const scope of [undefined, ...tenantsOf(policy, principal)]) {
    const d = decideIn(policy, principal, permission, resource, scope);
    if (d.allowed) return d;
    first ??= d;
  }
  return first as Decision;
}

/** The roles and tenant bindings give a principal, whatever credential it later uses. */
export function bindingsOf(
  policy: AccessPolicy,
  principal: string,
): { roles: string[]; tenant: string | undefined } {
  return rolesOf(policy, { id: principal, method: "none", roles: [] });
}

/**
 * Refuses (ESCALATION_DENIED) unless `caller` holds, in `tenant`'s scope
 * (undefined: cluster-wide), every grant of `roles`. Used wherever a key,
 * binding, role, token or certificate would give someone authority.
 */
export function assertCanGrant(
  policy: AccessPolicy,
  caller: Principal,
  roles: readonly string[],
  tenant: string | undefined,
): void {
  const grants = rolesIn(policy, caller, tenant).flatMap((r) => policy.roles.get(r)?.grants ?? []);
  for (const name of roles) {
    const role = policy.roles.get(name);
    if (role === undefined)
      throw new RpcError("INVALID_ARGUMENT", { message: `roles: unknown role ${name}` });
    const missing = role.grants.find((g) => !grantsCover(grants, g));
    if (missing !== undefined) {
      const where = tenant === undefined || tenant === "" ? "cluster-wide" : `in tenant ${tenant}`;
      throw new RpcError("ESCALATION_DENIED", {
        cause: new Error(
          `role ${name} grants ${missing}, which ${caller.id} does not hold ${where}`,
        ),
      });
    }
  }
}

/** What the caller of {@link assertCanActAs} knows of the target from elsewhere. */
export interface TargetFacts {
  /** The name is a registered or enrolled node's. */
  readonly nodeName?: boolean;
  /** The tenants of the principal's API keys in force ("": a key not confined to any). */
  readonly keyTenants?: readonly string[];
}

/**
 * Refuses (ESCALATION_DENIED) unless `caller` could grant everything a
 * credential or binding naming `target` would carry: the given roles plus
 * every role `target` already holds. A caller that could grant all of that
 * cluster-wide may act; anyone else is tenant-confined and may act only in
 * `tenant`, and only for a principal of that tenant alone: never for the
 * admin, `system:*`, a node's name, a principal with any cluster-wide
 * binding, or one bound in another tenant.
 */
export function assertCanActAs(
  policy: AccessPolicy,
  caller: Principal,
  target: string,
  roles: readonly string[],
  tenant: string | undefined,
  facts: TargetFacts = {},
): void {
  const scope = tenant === "" ? undefined : tenant;
  if (target === caller.id) {
    assertCanGrant(policy, caller, roles, scope);
    return;
  }
  const bound = policy.bindings.filter((b) => b.principal === target);
  const everything = [...new Set([...roles, ...bound.flatMap((b) => b.roles)])];
  try {
    assertCanGrant(policy, caller, everything, undefined);
    assertCanGrant(policy, caller, roles, scope);
    return;
  } catch (err) {
    if (!(err instanceof RpcError) || err.reason !== "ESCALATION_DENIED") throw err;
  }
  const refuse = (why: string): never => {
    throw new RpcError("ESCALATION_DENIED", {
      cause: new Error(`${caller.id} is tenant-confined and ${target} ${why}`),
    });
  };
  if (scope === undefined) refuse("would act cluster-wide");
  // Compared case-blind: "Admin" or "SYSTEM:x" would pass for them in a listing.
  const folded = target.toLowerCase();
  if (folded === "admin" || folded.startsWith("system:")) refuse("is a cluster-wide identity");
  if (facts.nodeName === true) refuse("is a node's name");
  if (bound.some((b) => b.tenant === undefined)) refuse("has a cluster-wide binding");
  if (bound.some((b) => b.tenant !== scope)) refuse("is bound in another tenant");
  if (facts.keyTenants?.includes("")) refuse("holds a key not confined to a tenant");
  if (facts.keyTenants?.some((t) => t !== scope)) refuse("holds keys of another tenant");
  assertCanGrant(policy, caller, everything, scope);
}
