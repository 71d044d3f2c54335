import type { AuditFields } from "../audit/index.js";
import {
  type AgentRefusal,
  FAILOVER_PRINCIPAL,
  type FailoverDecision,
  type StaleCopyDecision,
} from "../cluster/index.js";
import { type Migration, MigrationState } from "../gen/debvisor/v1/migration_pb.js";

/** The principal the daemon acts as when it settles migrations of a process that died. */
export const RECONCILER_PRINCIPAL = "system:reconciler";

/** What every record of the daemon acting on its own shares. */
function systemFields(principal: string, method: string, permission: string) {
  return {
    principal,
    authMethod: "internal",
    keyId: "",
    tenant: "",
    peer: "",
    service: "debvisor.v1.MigrationService",
    method,
    permission,
    durationMs: 0,
  };
}

/**
 * An audit record of one decision of the failover controller: the daemon
 * acting on its own is recorded like a caller, as `system:failover-controller`.
 */
export function failoverAuditFields(d: FailoverDecision): AuditFields {
  return {
    ...systemFields(FAILOVER_PRINCIPAL, "FailoverVM", "migration:failover"),
    event: "failover.decision",
    tenant: d.tenant,
    requestId: d.migrationId ?? d.requestId ?? "",
    decision: d.action,
    reason: d.detail,
    args: `vm_id=${d.vmId} node=${d.node}`,
    code: d.action === "failed" ? "FAILED_PRECONDITION" : d.action === "unknown" ? "UNKNOWN" : "OK",
    error: d.action === "failed" || d.action === "unknown" ? d.detail : "",
  };
}

/** An audit record of a migration settled after the process running it died. */
export function settledAuditFields(m: Migration, tenant: string): AuditFields {
  const ok = m.state === MigrationState.SUCCEEDED;
  return {
    ...systemFields(RECONCILER_PRINCIPAL, "MigrateVM", "migration:execute"),
    event: "migration.settled",
    tenant,
    requestId: m.migrationId,
    decision: ok ? "finished" : "rolled-back",
    reason: m.message,
    args: `vm_id=${m.vm?.vmId ?? ""} source=${m.source?.nodeId?.id ?? ""} target=${m.target?.nodeId?.id ?? ""}`,
    code: "OK",
    error: "",
  };
}

/** An audit record of a stale copy of a VM (a conflict) the control plane had stopped and undefined. */
export function staleCopyAuditFields(d: StaleCopyDecision): AuditFields {
  const ok = d.action === "removed";
  return {
    ...systemFields(RECONCILER_PRINCIPAL, "StopVm", "vm:stop"),
    service: "debvisor.v1.VmService",
    event: "vm.stale-copy",
    tenant: d.tenant,
    requestId: d.requestId ?? "",
    decision: d.action,
    reason: d.detail,
    args: `vm_id=${d.vmId} node=${d.node} placed_on=${d.placedOn} generation=${d.generation}`,
    code: ok ? "OK" : d.action === "unknown" ? "UNKNOWN" : "FAILED_PRECONDITION",
    error: ok ? "" : d.detail,
  };
}

/** The record the readiness probe writes while the trail is failing: its first success marks the gap. */
export function auditWritableFields(): AuditFields {
  return {
    ...systemFields("system:readiness", "", ""),
    service: "",
    event: "audit.writable",
    requestId: "",
    decision: "",
    reason: "the trail could not be written for a while; written again from here",
    args: "",
    code: "",
    error: "",
  };
}

/** An audit record of a node agent's stream refused because its certificate is not the node it claims. */
export function agentRefusedAuditFields(r: AgentRefusal): AuditFields {
  return {
    event: "agent.refused",
    requestId: r.requestId,
    principal: r.principal,
    authMethod: r.authMethod,
    keyId: "",
    tenant: "",
    peer: r.peer,
    service: "debvisor.v1.AgentService",
    method: "Connect",
    permission: "node:connect",
    decision: "deny",
    reason: r.detail,
    args: `node=${r.claimedNode}`,
    code: "PERMISSION_DENIED",
    error: "permission denied",
    durationMs: 0,
  };
}
