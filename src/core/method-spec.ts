import type { DescMethod } from "@bufbuild/protobuf";

/** Who may call a method at all, before any permission is checked. */
export type MethodAccess =
  /** Anyone who completes the TLS handshake (health checks). */
  | "public"
  /** Only an authenticated principal. */
  | "authenticated";

/** What a call acts on, when that matters to authorization. */
export interface ResourceRef {
  /** The node a node-scoped call acts on (self-only roles compare it with the principal). */
  readonly nodeId?: string;
}

/**
 * What a method acts on, for the authorization stage (Kubernetes' resource
 * and namespace): it resolves the target's tenant before the handler runs and
 * decides with the caller's rules for that tenant only.
 * - `cluster`: cluster-scoped (nodes' state, roles, the CA); only rules that
 *   hold cluster-wide count, so a tenant-confined caller is refused.
 * - `any` (the default): nothing in particular (lists, the caller itself); the
 *   permission held in any tenant lets the call in, and the handler shows
 *   only what `ctx.scope` can see.
 * - `tenant`: a creation in the tenant `id` names ("" : the caller's only
 *   tenant, or cluster-wide for a cluster-wide caller; several: INVALID_ARGUMENT).
 * - `vm`, `dataset`, `migration`, `replication-job`, `apikey`, `vm-operation`: an existing
 *   resource; `id` extracts its name and a resolver finds its tenants. One the
 *   caller may not see answers exactly like a missing one (NOT_FOUND).
 */
export type TargetKind =
  | "cluster"
  | "any"
  | "tenant"
  | "vm"
  | "dataset"
  | "migration"
  | "replication-job"
  | "apikey"
  | "vm-operation";

/** A method's target declaration: `{ kind: "vm", id: (req) => req.vmId }`. */
export interface TargetDecl {
  readonly kind: TargetKind;
  /** The target's name in the request (a string, or a dataset reference); unused for cluster and any. */
  readonly id?: (request: never) => unknown;
  /** An empty id means no particular target: the call is let in as for `any`. */
  readonly optional?: boolean;
}

/**
 * Finds the tenants owning a target: undefined when it does not exist, []
 * when it exists and belongs to no tenant (cluster-wide callers only), a
 * tenant name per owner otherwise. Supplied by the layer that knows the
 * records (inventory, storage records, migrations, keys). `callerTenants`
 * are the tenants the caller holds roles in, for targets named per tenant
 * (a tenant's replication job `a2` is stored as `<tenant>:a2`).
 */
export type TargetResolver = (
  id: unknown,
  signal: AbortSignal,
  callerTenants: readonly string[],
) => Promise<readonly string[] | undefined>;

/** What the pipeline needs to know of a method, besides its handler. */
export interface MethodPolicy {
  /** Permission the caller needs, for example `node:list`; null for methods any authenticated caller may use. */
  readonly permission: string | null;
  /** True when the call changes state (audited before it acts, never performed unrecorded). */
  readonly mutating: boolean;
  /** Defaults to `authenticated`. */
  readonly access?: MethodAccess;
  /** Checks the decoded request; throws an RpcError (INVALID_ARGUMENT) on bad input. */
  readonly validate?: (request: never) => void;
  /** What the request acts on, for authorization rules that depend on it. */
  readonly resource?: (request: never) => ResourceRef;
  /** What the call acts on; default `{ kind: "any" }`. */
  readonly target?: TargetDecl;
}

/** Method kinds the transport serves. */
export type MethodKind = "unary" | "server_streaming" | "client_streaming" | "bidi_streaming";

/** A method as the pipeline sees it: identity, shape and policy. */
export interface MethodSpec {
  /** Fully-qualified service name, `debvisor.v1.NodeService`. */
  readonly service: string;
  /** Method name as on the wire, `ListNodes`. */
  readonly name: string;
  /** gRPC path, `/debvisor.v1.NodeService/ListNodes`. */
  readonly path: string;
  readonly kind: MethodKind;
  readonly desc: DescMethod;
  readonly permission: string | null;
  readonly mutating: boolean;
  readonly access: MethodAccess;
  readonly validate: ((request: unknown) => void) | undefined;
  readonly resource: ((request: unknown) => ResourceRef) | undefined;
  readonly target: {
    readonly kind: TargetKind;
    readonly id: ((request: unknown) => unknown) | undefined;
    readonly optional: boolean;
  };
}
