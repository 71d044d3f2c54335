import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  defineService,
  principalOf,
  RpcError,
  type ServiceBinding,
  scopeOf,
  type TargetResolver,
} from "../core/index.js";
import type { ApiKeyRecord } from "../gen/debvisor/store/v1/records_pb.js";
import {
  AccessService,
  type ApiKeyInfoSchema,
  type CreateApiKeyRequest,
  type RevokeApiKeyRequest,
  type RotateApiKeyRequest,
  type SetBindingRequest,
} from "../gen/debvisor/v1/access_pb.js";
import {
  type AccessPolicy,
  assertCanActAs,
  decide,
  decideIn,
  rolesIn,
  rolesOf,
} from "./access-evaluator.js";
import type { ApiKeys } from "./api-keys.js";
import { grantsCover, isGrant, isPermission } from "./permission.js";
import { assertPrincipalName } from "./principal-names.js";
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
  /** Whether a name is a registered or enrolled node's (tenant-confined callers may not mint for it). */
  readonly isNodeName?: (name: string, signal: AbortSignal) => Promise<boolean>;
}

/** The tenants of an API key, for the authorization stage: [] for a cluster-wide key. */
export function apiKeyResolver(apiKeys: ApiKeys): TargetResolver {
  return async (id, signal) => {
    const key = typeof id === "string" ? await apiKeys.get(id, signal) : undefined;
    return key === undefined ? undefined : key.tenant === "" ? [] : [key.tenant];
  };
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
  /** What else makes a name someone's: a node's name, API keys in force (and their tenants). */
  const nodeName = async (name: string, signal: AbortSignal) => ({
    nodeName: (await deps.isNodeName?.(name, signal)) ?? false,
    keyTenants: (await deps.apiKeys.list(name, signal))
      .filter((k) => k.revokedAtMs === 0n)
      .map((k) => k.tenant),
  });
  return defineService(
    AccessService,
    {
      whoAmI: { permission: null, mutating: false },
      checkPermission: { permission: null, mutating: false },
      createApiKey: {
        permission: "auth:apikey:create",
        mutating: true,
        target: { kind: "tenant", id: (req: CreateApiKeyRequest) => req.tenant },
      },
      listApiKeys: { permission: "auth:apikey:list", mutating: false },
      revokeApiKey: {
        permission: "auth:apikey:revoke",
        mutating: true,
        target: { kind: "apikey", id: (req: RevokeApiKeyRequest) => req.id },
      },
      rotateApiKey: {
        permission: "auth:apikey:rotate",
        mutating: true,
        target: { kind: "apikey", id: (req: RotateApiKeyRequest) => req.id },
      },
      listRoles: { permission: "auth:role:list", mutating: false },
      listBindings: { permission: "auth:binding:list", mutating: false },
      setBinding: {
        permission: "auth:binding:set",
        mutating: true,
        target: { kind: "tenant", id: (req: SetBindingRequest) => req.tenant },
      },
      setRole: { permission: "auth:role:set", mutating: true, target: { kind: "cluster" } },
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
          // Another principal's roles span tenants: only a cluster-wide grant may look.
          if (!decideIn(deps.policy(), caller, "auth:check:any", {}, undefined).allowed)
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
        assertPrincipalName(target);
        assertMayKeyFor(caller.id, target, scopeOf(ctx).clusterWide);
        // A key for another principal carries that principal's bindings too.
        assertCanActAs(
          deps.policy(),
          caller,
          target,
          req.roles,
          tenant === "" ? undefined : tenant,
          await nodeName(target, ctx.signal),
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
        const scope = scopeOf(ctx);
        return { keys: keys.filter((k) => scope.canSee(k.tenant)).map(keyInfo) };
      },
      async revokeApiKey(req, ctx) {
        // The authorization stage found the key and its tenant visible to the caller.
        return keyInfo(await deps.apiKeys.revoke(req.id, ctx.signal));
      },
      async rotateApiKey(req, ctx) {
        const caller = principalOf(ctx);
        const old = await deps.apiKeys.get(req.id, ctx.signal);
        if (old === undefined) throw new RpcError("APIKEY_NOT_FOUND");
        // The new token acts as the key's principal: only someone who could make that key may rotate it.
        assertMayKeyFor(caller.id, old.principal, scopeOf(ctx).clusterWide);
        assertCanActAs(
          deps.policy(),
          caller,
          old.principal,
          old.roles,
          old.tenant === "" ? undefined : old.tenant,
          await nodeName(old.principal, ctx.signal),
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
    },
  );
}

/**
 * A key's principal is named as the key's own: one named like another
 * source's person (`jwt:<iss>:<sub>`, a panel `user:`, an `oidc:` sign-in)
 * would act and be audited as them. Only a cluster-wide caller may make or
 * rotate one (say, for a migration of identities); ESCALATION_DENIED else.
 */
function assertMayKeyFor(caller: string, principal: string, clusterWide: boolean): void {
  if (principal !== caller && /^(jwt|oidc|user):/i.test(principal) && !clusterWide)
    throw new RpcError("ESCALATION_DENIED", {
      cause: new Error(`${caller} may not hold keys for another source's identity ${principal}`),
    });
}
