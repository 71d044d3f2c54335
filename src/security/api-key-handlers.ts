// The AccessService's API key calls: create, list, revoke and rotate. A key
// acts as its principal, so making or rotating one passes the same
// no-escalation check as binding that principal would.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { principalOf, RpcError, type ServiceImpl, scopeOf } from "../core/index.js";
import type { ApiKeyRecord } from "../gen/debvisor/store/v1/records_pb.js";
import type { AccessService, ApiKeyInfoSchema } from "../gen/debvisor/v1/access_pb.js";
import { assertCanActAs } from "./access-evaluator.js";
import type { AccessShared } from "./access-service.js";
import { assertPrincipalName } from "./principal-names.js";

type Handlers = Pick<
  ServiceImpl<typeof AccessService>,
  "createApiKey" | "listApiKeys" | "revokeApiKey" | "rotateApiKey"
>;

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

/** CreateApiKey, ListApiKeys, RevokeApiKey and RotateApiKey. */
export function createApiKeyHandlers(shared: AccessShared): Handlers {
  const { deps, nodeName } = shared;
  return {
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
  };
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
