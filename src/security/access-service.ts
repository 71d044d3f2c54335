import type { MessageInitShape } from "@bufbuild/protobuf";
import { defineService, principalOf, RpcError, type ServiceBinding } from "../core/index.js";
import type { ApiKeyRecord } from "../gen/debvisor/store/v1/records_pb.js";
import { AccessService, type ApiKeyInfoSchema } from "../gen/debvisor/v1/access_pb.js";
import {
  type AccessPolicy,
  assertCanActAs,
  assertCanGrant,
  decide,
  rolesOf,
} from "./access-evaluator.js";
import type { ApiKeys } from "./api-keys.js";
import { grantsCover, isGrant, isPermission } from "./permission.js";
import type { StoredBindings } from "./stored-bindings.js";
import type { StoredRoles } from "./stored-roles.js";

/** Dependencies of the AccessService handlers. */
export interface AccessServiceDeps {
  readonly policy: () => AccessPolicy;
  readonly apiKeys: ApiKeys;
  readonly bindings: StoredBindings;
  readonly roles: StoredRoles;
  /** Default rotation grace. */
  readonly rotationGraceMs: number;
}

const msTs = (ms: bigint) =>
  ms === 0n ? undefined : { seconds: ms / 1000n, nanos: Number(ms % 1000n) * 1_000_000 };

function keyInfo(r: ApiKeyRecord): MessageInitShape<typeof ApiKeyInfoSchema> {
  return {
    id: r.id,
    principal: r.principal,
    roles: r.roles,
    tenant: r.tenant,
    created: msTs(r.createdAtMs),
    expires: msTs(r.expiresAtMs),
    lastUsed: msTs(r.lastUsedAtMs),
    revoked: msTs(r.revokedAtMs),
    createdBy: r.createdBy,
    description: r.description,
    replacedBy: r.replacedBy,
  };
}

/**
 * AccessService. Nobody grants what they do not hold: a key's or binding's
 * roles must be covered by the caller's own grants, and a tenant-scoped
 * caller can only grant within its tenant.
 */
export function createAccessService(deps: AccessServiceDeps): ServiceBinding {
  /** A tenant-confined caller sees and touches only its own tenant's keys and bindings. */
  const inScope = (ctx: { tenant?: string }, tenant: string) =>
    ctx.tenant === undefined || tenant === ctx.tenant;
  /** Some things are cluster-wide by nature (roles): tenant-confined callers may not change them. */
  const requireClusterWide = (ctx: { tenant?: string }) => {
    if (ctx.tenant !== undefined)
      throw new RpcError("PERMISSION_DENIED", {
        cause: new Error("tenant-confined callers cannot change cluster-wide settings"),
      });
  };
  return defineService(
    AccessService,
    {
      whoAmI: { permission: null, mutating: false },
      checkPermission: { permission: null, mutating: false },
      createApiKey: { permission: "auth:apikey:create", mutating: true },
      listApiKeys: { permission: "auth:apikey:list", mutating: false },
      revokeApiKey: { permission: "auth:apikey:revoke", mutating: true },
      rotateApiKey: { permission: "auth:apikey:rotate", mutating: true },
      listRoles: { permission: "auth:role:list", mutating: false },
      listBindings: { permission: "auth:binding:list", mutating: false },
      setBinding: { permission: "auth:binding:set", mutating: true },
      setRole: { permission: "auth:role:set", mutating: true },
    },
    {
      async whoAmI(_req, ctx) {
        const p = principalOf(ctx);
        const { roles, tenant } = rolesOf(deps.policy(), p);
        return {
          principal: p.id,
          authMethod: p.method,
          roles,
          tenant: tenant ?? "",
          apiKeyId: p.keyId ?? "",
        };
      },
      async checkPermission(req, ctx) {
        const caller = principalOf(ctx);
        if (!isPermission(req.permission))
          throw new RpcError("INVALID_ARGUMENT", { message: "permission: like node:list" });
        let subject = caller;
        if (req.principal !== "" && req.principal !== caller.id) {
          if (!decide(deps.policy(), caller, "auth:check:any").allowed)
            throw new RpcError("PERMISSION_DENIED");
          subject = { id: req.principal, method: "none", roles: [] };
        }
        const d = decide(
          deps.policy(),
          subject,
          req.permission,
          req.nodeId === "" ? {} : { nodeId: req.nodeId },
        );
        return {
          allowed: d.allowed,
          reason: d.reason,
          roles: rolesOf(deps.policy(), subject).roles,
        };
      },
      async createApiKey(req, ctx) {
        const caller = principalOf(ctx);
        const tenant = req.tenant !== "" ? req.tenant : (ctx.tenant ?? "");
        if (req.roles.length === 0)
          throw new RpcError("INVALID_ARGUMENT", { message: "roles: at least one" });
        const target = req.principal === "" ? caller.id : req.principal;
        // A key for another principal carries that principal's bindings too.
        assertCanActAs(
          deps.policy(),
          caller,
          target,
          req.roles,
          tenant === "" ? undefined : tenant,
        );
        const issued = await deps.apiKeys.create(
          {
            principal: target,
            roles: req.roles,
            tenant: tenant === "" ? undefined : tenant,
            ttlMs: Number(req.ttlSeconds) * 1000,
            description: req.description.slice(0, 256),
            createdBy: caller.id,
          },
          ctx.signal,
        );
        return { key: keyInfo(issued.record), token: issued.token };
      },
      async listApiKeys(req, ctx) {
        const keys = await deps.apiKeys.list(
          req.principal === "" ? undefined : req.principal,
          ctx.signal,
        );
        return { keys: keys.filter((k) => inScope(ctx, k.tenant)).map(keyInfo) };
      },
      async revokeApiKey(req, ctx) {
        const key = await deps.apiKeys.get(req.id, ctx.signal);
        if (key === undefined || !inScope(ctx, key.tenant)) throw new RpcError("APIKEY_NOT_FOUND");
        return keyInfo(await deps.apiKeys.revoke(req.id, ctx.signal));
      },
      async rotateApiKey(req, ctx) {
        const caller = principalOf(ctx);
        const old = await deps.apiKeys.get(req.id, ctx.signal);
        if (old === undefined || !inScope(ctx, old.tenant)) throw new RpcError("APIKEY_NOT_FOUND");
        // The new token acts as the key's principal: only someone who could make that key may rotate it.
        assertCanActAs(
          deps.policy(),
          caller,
          old.principal,
          old.roles,
          old.tenant === "" ? undefined : old.tenant,
        );
        const grace = Number(req.graceSeconds) * 1000;
        const issued = await deps.apiKeys.rotate(
          req.id,
          grace > 0 ? grace : deps.rotationGraceMs,
          caller.id,
          ctx.signal,
        );
        return { key: keyInfo(issued.record), token: issued.token };
      },
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
        const stored = new Set(deps.bindings.all().map((b) => b.principal));
        return {
          bindings: deps
            .policy()
            .bindings.filter((b) => inScope(ctx, b.tenant ?? ""))
            .map((b) => ({
              principal: b.principal,
              roles: [...b.roles],
              tenant: b.tenant ?? "",
              source: stored.has(b.principal) ? "store" : "config",
            })),
        };
      },
      async setRole(req, ctx) {
        const caller = principalOf(ctx);
        requireClusterWide(ctx);
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
        const held = rolesOf(policy, caller).roles.flatMap(
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
        if (req.roles.length === 0) {
          const existing = deps.bindings.all().find((b) => b.principal === req.principal);
          if (existing === undefined || !inScope(ctx, existing.tenant))
            throw new RpcError("BINDING_NOT_FOUND");
          await deps.bindings.remove(req.principal, ctx.signal);
          return { principal: req.principal, roles: [], tenant: "", source: "store" };
        }
        // Replacing a binding must not hand out more than the caller holds, nor take over one outside its tenant.
        const current = deps.bindings.all().find((b) => b.principal === req.principal);
        if (current !== undefined && !inScope(ctx, current.tenant))
          throw new RpcError("BINDING_NOT_FOUND");
        // A tenant-confined caller's bindings stay in its tenant.
        const tenant = req.tenant === "" ? ctx.tenant : req.tenant;
        assertCanGrant(deps.policy(), caller, req.roles, tenant);
        const r = await deps.bindings.set(
          { principal: req.principal, roles: req.roles, tenant },
          caller.id,
          ctx.signal,
        );
        return { principal: r.principal, roles: r.roles, tenant: r.tenant, source: "store" };
      },
    },
  );
}
