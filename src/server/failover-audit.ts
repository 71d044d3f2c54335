import type { AuditFields } from "../audit/index.js";
import { FAILOVER_PRINCIPAL, type FailoverDecision } from "../cluster/index.js";

/**
 * An audit record of one decision of the failover controller: the daemon
 * acting on its own is recorded like a caller, as `system:failover-controller`.
 */
export function failoverAuditFields(d: FailoverDecision): AuditFields {
  return {
    event: "failover.decision",
    requestId: d.migrationId ?? "",
    principal: FAILOVER_PRINCIPAL,
    authMethod: "internal",
    keyId: "",
    tenant: "",
    peer: "",
    service: "debvisor.v1.MigrationService",
    method: "FailoverVM",
    permission: "migration:failover",
    decision: d.action,
    reason: d.detail,
    args: `vm_id=${d.vmId} node=${d.node}`,
    code: d.action === "failed" ? "FAILED_PRECONDITION" : "OK",
    error: d.action === "failed" ? d.detail : "",
    durationMs: 0,
  };
}
