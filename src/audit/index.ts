// The audit layer: a durable, hash-chained, fail-closed audit trail and the
// pipeline stages that write it.

export type { AuditLog, AuditLogOptions, AuditStats } from "./audit-log.js";
export { openAuditLog } from "./audit-log.js";
export type { AuditFields, AuditRecord } from "./audit-record.js";
export { canonical, chainHash, recordLine } from "./audit-record.js";
export type { AuditServiceDeps } from "./audit-service.js";
export { createAuditService } from "./audit-service.js";
export type { AuditStageOptions, AuditStages } from "./audit-stages.js";
export { createAuditStages, summarize } from "./audit-stages.js";
export type { VerifyResult } from "./audit-verify.js";
export { verifyAuditFiles } from "./audit-verify.js";
export { isTornTail } from "./recover-audit-file.js";
