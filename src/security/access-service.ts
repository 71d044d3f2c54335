// AccessService: who am I, permission checks, API keys, roles and bindings.
// This file holds the dependencies, the per-method policies and the
// composition; the handlers live in *-handlers.ts beside it.
import { defineService, type ServiceBinding, type TargetResolver } from "../core/index.js";
import {
  AccessService,
  type CreateApiKeyRequest,
  type RevokeApiKeyRequest,
  type RotateApiKeyRequest,
  type SetBindingRequest,
} from "../gen/debvisor/v1/access_pb.js";
import type { AccessPolicy, TargetFacts } from "./access-evaluator.js";
import { createApiKeyHandlers } from "./api-key-handlers.js";
import type { ApiKeys } from "./api-keys.js";
import { createIdentityHandlers } from "./identity-handlers.js";
import { createRoleBindingHandlers } from "./role-binding-handlers.js";
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

/** What the AccessService's handler parts share, built once per service. */
export interface AccessShared {
  readonly deps: AccessServiceDeps;
  /** What else makes a name someone's: a node's name, API keys in force (and their tenants). */
  readonly nodeName: (name: string, signal: AbortSignal) => Promise<TargetFacts>;
}

/** The tenants of an API key, for the authorization stage: [] for a cluster-wide key. */
export function apiKeyResolver(apiKeys: ApiKeys): TargetResolver {
  return async (id, signal) => {
    const key = typeof id === "string" ? await apiKeys.get(id, signal) : undefined;
    return key === undefined ? undefined : key.tenant === "" ? [] : [key.tenant];
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
  const shared: AccessShared = { deps, nodeName };
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
      ...createIdentityHandlers(shared),
      ...createApiKeyHandlers(shared),
      ...createRoleBindingHandlers(shared),
    },
  );
}
