// The AccessService's roles and bindings: listing them, and setting or
// removing the ones kept in the store. Nobody grants what they do not hold.
import { principalOf, RpcError, type ServiceImpl, scopeOf } from "../core/index.js";
import type { AccessService } from "../gen/debvisor/v1/access_pb.js";
import { assertCanActAs, rolesIn } from "./access-evaluator.js";
import type { AccessShared } from "./access-service.js";
import { grantsCover, isGrant } from "./permission.js";

type Handlers = Pick<
  ServiceImpl<typeof AccessService>,
  "listRoles" | "listBindings" | "setRole" | "setBinding"
>;

/** ListRoles, ListBindings, SetRole and SetBinding. */
export function createRoleBindingHandlers(shared: AccessShared): Handlers {
  const { deps, nodeName } = shared;
  return {
    async listRoles() {
      return {
        roles: [...deps.policy().roles.values()].map((r) => ({
          name: r.name,
          grants: [...r.grants],
          builtIn: r.builtIn,
        })),
      };
    },
    async listBindings(_req, ctx) {
      // A pair, not "tenant/principal": both may hold '/'.
      const pair = (tenant: string, principal: string) => JSON.stringify([tenant, principal]);
      const stored = new Set(deps.bindings.all().map((b) => pair(b.tenant, b.principal)));
      const scope = scopeOf(ctx);
      return {
        bindings: deps
          .policy()
          .bindings.filter((b) => scope.canSee(b.tenant ?? ""))
          .map((b) => ({
            principal: b.principal,
            roles: [...b.roles],
            tenant: b.tenant ?? "",
            source: stored.has(pair(b.tenant ?? "", b.principal)) ? "store" : "config",
          })),
      };
    },
    async setRole(req, ctx) {
      const caller = principalOf(ctx);
      const existing = deps.policy().roles.get(req.name);
      const stored = deps.roles.all().some((r) => r.name === req.name);
      if (existing !== undefined && !stored) throw new RpcError("ROLE_PROTECTED");
      if (req.grants.length === 0) {
        await deps.roles.remove(req.name, ctx.signal);
        return { name: req.name, grants: [], builtIn: false };
      }
      const bad = req.grants.find((g) => !isGrant(g));
      if (bad !== undefined)
        throw new RpcError("INVALID_ARGUMENT", {
          message: `grants: ${bad.slice(0, 64)} is not a permission, a:b:* or *`,
        });
      const policy = deps.policy();
      // Roles are cluster-wide: only grants held cluster-wide count.
      const held = rolesIn(policy, caller, undefined).flatMap(
        (r) => policy.roles.get(r)?.grants ?? [],
      );
      const missing = req.grants.find((g) => !grantsCover(held, g));
      if (missing !== undefined)
        throw new RpcError("ESCALATION_DENIED", {
          cause: new Error(`${caller.id} does not hold ${missing}`),
        });
      const r = await deps.roles.set(req.name, req.grants, caller.id, ctx.signal);
      return { name: r.name, grants: [...r.grants], builtIn: false };
    },
    async setBinding(req, ctx) {
      const caller = principalOf(ctx);
      // One binding per principal and tenant; the authorization stage let the caller act in this one.
      const tenant = req.tenant === "" ? ctx.tenant : req.tenant;
      if (req.roles.length === 0) {
        const existing = deps.bindings
          .all()
          .find((b) => b.principal === req.principal && b.tenant === (tenant ?? ""));
        if (existing === undefined) throw new RpcError("BINDING_NOT_FOUND");
        await deps.bindings.remove(req.principal, tenant, ctx.signal);
        return { principal: req.principal, roles: [], tenant: tenant ?? "", source: "store" };
      }
      // Nobody grants what they do not hold; a tenant-confined caller binds only its tenant's own principals.
      assertCanActAs(
        deps.policy(),
        caller,
        req.principal,
        req.roles,
        tenant,
        await nodeName(req.principal, ctx.signal),
      );
      const r = await deps.bindings.set(
        { principal: req.principal, roles: req.roles, tenant },
        caller.id,
        ctx.signal,
      );
      return { principal: r.principal, roles: r.roles, tenant: r.tenant, source: "store" };
    },
  };
}
