import { Code } from "./code.js";

/** One entry of the error catalogue: the code a reason maps to and the message clients see. */
export interface ReasonSpec {
  readonly code: Code;
  /** Safe for clients: never names a path, a backend, or a resource the caller may not see. */
  readonly message: string;
}

/**
 * Every machine-readable error reason the service returns. Clients may switch
 * on these strings; they never change meaning. `docs/errors.md` documents each
 * one and a test keeps the two in step.
 */
export const REASONS = {
  INTERNAL: { code: Code.Internal, message: "internal error" },
  REQUEST_MALFORMED: { code: Code.InvalidArgument, message: "request could not be decoded" },
  INVALID_ARGUMENT: { code: Code.InvalidArgument, message: "invalid argument" },
  PAGE_TOKEN_INVALID: { code: Code.InvalidArgument, message: "page_token is not valid" },
  MESSAGE_TOO_LARGE: { code: Code.ResourceExhausted, message: "message exceeds the size limit" },
  UNAUTHENTICATED: { code: Code.Unauthenticated, message: "authentication required" },
  RATE_LIMITED: { code: Code.ResourceExhausted, message: "rate limit exceeded" },
  AUTH_LOCKED_OUT: {
    code: Code.Unauthenticated,
    message: "credential locked out after repeated failed authentications",
  },
  PERMISSION_DENIED: { code: Code.PermissionDenied, message: "permission denied" },
  ESCALATION_DENIED: {
    code: Code.PermissionDenied,
    message: "cannot grant permissions you do not hold",
  },
  APIKEY_NOT_FOUND: { code: Code.NotFound, message: "api key not found" },
  ROLE_NOT_FOUND: { code: Code.NotFound, message: "role not found" },
  ROLE_PROTECTED: {
    code: Code.FailedPrecondition,
    message: "built-in and config-file roles cannot be changed here",
  },
  BINDING_NOT_FOUND: { code: Code.NotFound, message: "binding not found" },
  APIKEY_REVOKED: { code: Code.FailedPrecondition, message: "api key is revoked" },
  APIKEY_EXPIRED: { code: Code.FailedPrecondition, message: "api key has expired" },
  NODE_NOT_FOUND: { code: Code.NotFound, message: "node not found" },
  NODE_ID_TAKEN: { code: Code.AlreadyExists, message: "node id is registered to another identity" },
  NODE_IN_USE: {
    code: Code.FailedPrecondition,
    message: "only a drained node that is gone can be removed",
  },
  VM_NOT_FOUND: { code: Code.NotFound, message: "vm not found" },
  REPORT_FROM_FUTURE: {
    code: Code.InvalidArgument,
    message: "report timestamp is later than the server's clock allows",
  },
  MIGRATION_NOT_FOUND: { code: Code.NotFound, message: "migration not found" },
  DATASET_NOT_FOUND: { code: Code.NotFound, message: "dataset not found" },
  BACKEND_UNAVAILABLE: {
    code: Code.Unavailable,
    message: "hypervisor backend unavailable; retry later",
  },
  BACKEND_FAILED: { code: Code.Internal, message: "backend operation failed" },
  BACKEND_TIMEOUT: { code: Code.DeadlineExceeded, message: "backend did not answer in time" },
  MIGRATION_NOT_ALLOWED: {
    code: Code.FailedPrecondition,
    message: "migration not allowed; plan it to see which check fails",
  },
  MIGRATION_IN_PROGRESS: {
    code: Code.FailedPrecondition,
    message: "another migration or failover of this vm is in flight",
  },
  MIGRATION_FINISHED: { code: Code.FailedPrecondition, message: "migration has already finished" },
  FAILOVER_NOT_ALLOWED: {
    code: Code.FailedPrecondition,
    message: "failover needs the vm's node not ready for longer than the fence delay",
  },
  NO_TARGET: { code: Code.FailedPrecondition, message: "no node can take this vm now" },
  DATASET_EXISTS: { code: Code.AlreadyExists, message: "dataset already exists" },
  SNAPSHOT_NOT_FOUND: { code: Code.NotFound, message: "snapshot not found" },
  SNAPSHOT_EXISTS: { code: Code.AlreadyExists, message: "snapshot already exists" },
  SNAPSHOT_HELD: { code: Code.FailedPrecondition, message: "snapshot is held or busy" },
  SNAPSHOT_HAS_CLONES: { code: Code.FailedPrecondition, message: "snapshot has clones" },
  SNAPSHOT_IN_USE: {
    code: Code.FailedPrecondition,
    message: "snapshot is the incremental base of a replication job",
  },
  SNAPSHOT_NOT_PROTECTED: {
    code: Code.FailedPrecondition,
    message: "snapshot is not a protected template",
  },
  IMAGE_HAS_CLONES: {
    code: Code.FailedPrecondition,
    message: "image has clones; flatten or delete them first",
  },
  IMAGE_IN_USE: { code: Code.FailedPrecondition, message: "image is a vm's disk" },
  DISK_IN_USE: { code: Code.FailedPrecondition, message: "dataset is already another vm's disk" },
  IMAGE_NOT_A_CLONE: {
    code: Code.FailedPrecondition,
    message: "image is not a clone: it has no template to depend on",
  },
  WATCH_TOO_LARGE: {
    code: Code.ResourceExhausted,
    message: "the watched list is too large; narrow it with filters",
  },
  TOO_MANY_WATCHES: {
    code: Code.ResourceExhausted,
    message: "too many open watches; close some first",
  },
  TENANT_FILTER_DENIED: {
    code: Code.PermissionDenied,
    message: "only cluster-wide callers may filter by tenant",
  },
  REPLICATION_JOB_NOT_FOUND: { code: Code.NotFound, message: "replication job not found" },
  REPLICATION_JOB_EXISTS: {
    code: Code.AlreadyExists,
    message: "a different replication job already exists",
  },
  REPLICATION_RUNNING: { code: Code.FailedPrecondition, message: "replication job is running" },
  REPLICATION_SOURCE_MOVED: {
    code: Code.FailedPrecondition,
    message: "the dataset's vm does not run on the job's source node",
  },
  REPLICATION_DIVERGED: {
    code: Code.FailedPrecondition,
    message:
      "the target's copy does not end at the snapshot the send starts from (it has snapshots or writes the source lacks)",
  },
  REPLICATION_STREAM_REFUSED: {
    code: Code.FailedPrecondition,
    message: "the replication stream is not a volume's; the target does not keep it",
  },
  STORAGE_UNSUPPORTED: {
    code: Code.FailedPrecondition,
    message: "the dataset's storage backend does not support this operation",
  },
  STORAGE_UNAVAILABLE: {
    code: Code.Unavailable,
    message: "storage backend failed or timed out; retry later",
  },
  SERVICE_UNKNOWN: { code: Code.NotFound, message: "unknown service" },
  NOT_IMPLEMENTED: { code: Code.Unimplemented, message: "not implemented by this server yet" },
  CONFLICT: { code: Code.Aborted, message: "concurrent update; retry" },
  VALUE_TOO_LARGE: { code: Code.InvalidArgument, message: "value exceeds the store's size limit" },
  STORE_UNAVAILABLE: { code: Code.Unavailable, message: "state store unavailable; retry later" },
  WATCH_COMPACTED: { code: Code.OutOfRange, message: "requested history has been compacted" },
  LEASE_NOT_FOUND: { code: Code.NotFound, message: "lease not found or expired" },
  CA_UNAVAILABLE: { code: Code.FailedPrecondition, message: "this server holds no CA key" },
  RENEW_NEEDS_MTLS: {
    code: Code.FailedPrecondition,
    message: "renewal needs the current certificate (mTLS)",
  },
  CERT_ALREADY_RENEWED: {
    code: Code.PermissionDenied,
    message: "this certificate was already renewed; renew its successor",
  },
  CERT_TOO_NEW_TO_RENEW: {
    code: Code.FailedPrecondition,
    message: "this certificate is too new to renew; retry later",
  },
  REVOKED_SERVERS_NOT_READY: {
    code: Code.Unavailable,
    message: "the list of revoked server certificates is not ready yet; retry later",
  },
  AUDIT_UNAVAILABLE: { code: Code.Unavailable, message: "audit trail unavailable; call refused" },
  SHUTTING_DOWN: { code: Code.Unavailable, message: "server is shutting down" },
  DEADLINE_EXCEEDED: { code: Code.DeadlineExceeded, message: "deadline exceeded" },
  CANCELLED: { code: Code.Canceled, message: "call cancelled" },
  PANEL_USER_NOT_FOUND: { code: Code.NotFound, message: "panel user not found" },
  LOGIN_FAILED: { code: Code.Unauthenticated, message: "wrong user name or password" },
  PANEL_REQUEST_REFUSED: {
    code: Code.PermissionDenied,
    message: "request refused: not from the panel's own page",
  },
  OIDC_SIGN_IN_EXPIRED: {
    code: Code.Unauthenticated,
    message: "sign-in expired or already used; sign in again",
  },
  OIDC_ISSUER_REFUSED: {
    code: Code.Unauthenticated,
    message: "the identity provider refused the sign-in",
  },
  OIDC_TOKEN_INVALID: {
    code: Code.Unauthenticated,
    message: "the identity provider's answer failed verification",
  },
  OIDC_ISSUER_UNAVAILABLE: {
    code: Code.Unavailable,
    message: "the identity provider could not be reached; retry later",
  },
  OIDC_NO_ROLES: {
    code: Code.PermissionDenied,
    message: "no role is bound to this account; ask an administrator",
  },
  OIDC_TOO_MANY_SIGN_INS: {
    code: Code.ResourceExhausted,
    message: "too many sign-ins in progress; finish one or retry in a few minutes",
  },
  ACCESS_CHANGED: {
    code: Code.Unavailable,
    message: "the caller's access changed while the stream was open; open it again",
  },
  STREAM_STALLED: {
    code: Code.ResourceExhausted,
    message: "stream closed: the client stopped reading",
  },
  AGENT_STREAM_REPLACED: {
    code: Code.Aborted,
    message: "a newer stream of this node replaced this one",
  },
  OPERATION_INTERRUPTED: {
    code: Code.Aborted,
    message: "operation interrupted; its effect is unknown",
  },
  STALE_GENERATION: {
    code: Code.FailedPrecondition,
    message: "vm placed elsewhere since the operation was issued; not started",
  },
  FENCED: {
    code: Code.FailedPrecondition,
    message: "this node is fenced from the vm's disks; not started",
  },
  COPY_NOT_STALE: {
    code: Code.FailedPrecondition,
    message: "the copy here is not older than the generation sent; not removed",
  },
  OPERATION_NOT_FOUND: { code: Code.NotFound, message: "operation not found" },
  VM_EXISTS: { code: Code.AlreadyExists, message: "a vm with this id already exists" },
  VM_RUNNING: {
    code: Code.FailedPrecondition,
    message: "the vm is running; stop it first or force",
  },
  VM_MANAGED: { code: Code.FailedPrecondition, message: "the vm is already managed" },
  VM_OPERATION_OPEN: {
    code: Code.FailedPrecondition,
    message: "an operation on the vm has not ended yet",
  },
  DEFINE_UNSUPPORTED: {
    code: Code.FailedPrecondition,
    message: "this node's hypervisor cannot define or undefine vms",
  },
  TRANSFER_TICKET_INVALID: {
    code: Code.PermissionDenied,
    message: "transfer ticket refused",
  },
  AGENT_NOT_CONNECTED: {
    code: Code.Unavailable,
    message: "node agent not connected to this control-plane process; retry later",
  },
  AGENT_REPORTS_NODE: {
    code: Code.FailedPrecondition,
    message: "the node's agent is connected and reports it; NodeService reports for it are refused",
  },
  AGENT_CAPABILITY_MISSING: {
    code: Code.FailedPrecondition,
    message: "the node's agent does not run this kind of operation",
  },
} as const satisfies Record<string, ReasonSpec>;

/** A reason from the catalogue. */
export type Reason = keyof typeof REASONS;

/** All reasons, for documentation checks and tooling. */
export function allReasons(): Reason[] {
  return Object.keys(REASONS) as Reason[];
}
