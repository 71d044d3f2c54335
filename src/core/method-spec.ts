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
}
