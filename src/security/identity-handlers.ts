// The AccessService's questions about a caller: who it is (WhoAmI) and
// whether it, or another principal, holds a permission (CheckPermission).
import { principalOf, RpcError, type ServiceImpl } from "../core/index.js";
import type { AccessService } from "../gen/debvisor/v1/access_pb.js";
import { decide, decideIn, rolesOf } from "./access-evaluator.js";
import type { AccessShared } from "./access-service.js";
import { isPermission } from "./permission.js";

type Handlers = Pick<ServiceImpl<typeof AccessService>, "whoAmI" | "checkPermission">;

/** WhoAmI and CheckPermission. */
export function createIdentityHandlers(shared: AccessShared): Handlers {
  const { deps } = shared;
  return {
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
  };
}
