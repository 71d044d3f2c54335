/**
 * The permission each RPC needs, as documented in proto/debvisor/v1 and
 * enforced by the server, so a refusal can say what is missing
 * (`permission denied: you need migration:execute`). The server keeps the
 * deciding rule to its log; the permission a method needs is public.
 * test/hvctl-permissions.test.ts checks this table against the server's own.
 * Methods with no permission (any authenticated caller) map to null.
 */
export const METHOD_PERMISSIONS: Readonly<Record<string, string | null>> = {
  "/debvisor.v1.NodeService/RegisterNode": "node:register",
  "/debvisor.v1.NodeService/Heartbeat": "node:heartbeat",
  "/debvisor.v1.NodeService/ListNodes": "node:list",
  "/debvisor.v1.NodeService/GetNode": "node:list",
  "/debvisor.v1.VmService/ListVms": "vm:list",
  "/debvisor.v1.VmService/GetVm": "vm:list",
  "/debvisor.v1.MigrationService/PrepareMigration": "migration:plan",
  "/debvisor.v1.MigrationService/MigrateVM": "migration:execute",
  "/debvisor.v1.MigrationService/FailoverVM": "migration:failover",
  "/debvisor.v1.MigrationService/ListMigrations": "migration:list",
  "/debvisor.v1.MigrationService/GetMigration": "migration:list",
  "/debvisor.v1.StorageService/CreateSnapshot": "storage:snapshot:create",
  "/debvisor.v1.StorageService/PruneSnapshots": "storage:snapshot:delete",
  "/debvisor.v1.StorageService/PlanZfsReplication": "storage:replication:plan",
  "/debvisor.v1.StorageService/RunZfsReplication": "storage:replication:execute",
  "/debvisor.v1.StorageService/GetReplicationStatus": "storage:replication:status",
  "/debvisor.v1.StorageService/CreateRbdTemplateSnapshot": "storage:snapshot:create",
  "/debvisor.v1.StorageService/CloneRbdFromTemplate": "storage:clone",
  "/debvisor.v1.StorageService/ListSnapshots": "storage:snapshot:list",
  "/debvisor.v1.StorageService/ListReplicationJobs": "storage:replication:status",
  "/debvisor.v1.AccessService/WhoAmI": null,
  "/debvisor.v1.AccessService/CheckPermission": null,
  "/debvisor.v1.AccessService/CreateApiKey": "auth:apikey:create",
  "/debvisor.v1.AccessService/ListApiKeys": "auth:apikey:list",
  "/debvisor.v1.AccessService/RevokeApiKey": "auth:apikey:revoke",
  "/debvisor.v1.AccessService/RotateApiKey": "auth:apikey:rotate",
  "/debvisor.v1.AccessService/ListRoles": "auth:role:list",
  "/debvisor.v1.AccessService/ListBindings": "auth:binding:list",
  "/debvisor.v1.AccessService/SetBinding": "auth:binding:set",
  "/debvisor.v1.AccessService/SetRole": "auth:role:set",
  "/debvisor.v1.AuditService/ListAuditRecords": "audit:read",
  "/debvisor.v1.AuditService/FollowAuditRecords": "audit:read",
  "/debvisor.v1.EnrollmentService/CreateEnrollmentToken": "pki:token:create",
  "/debvisor.v1.EnrollmentService/Enroll": null,
  "/debvisor.v1.EnrollmentService/RenewCertificate": null,
  "/debvisor.v1.EnrollmentService/RevokeCertificate": "pki:cert:revoke",
  "/debvisor.v1.EnrollmentService/ListCertificates": "pki:cert:list",
  "/debvisor.v1.EnrollmentService/IssueCertificate": "pki:cert:issue",
};
