import type { Logger } from "./logger.js";
import type { MethodSpec } from "./method-spec.js";

/** A client certificate that the transport verified against the cluster CA. */
export interface PeerCertificate {
  /** Subject common name. */
  readonly commonName: string;
  /** Full subject as text, for logs. */
  readonly subject: string;
  /** Issuer as text, for logs. */
  readonly issuer: string;
  /** Serial number in hex. */
  readonly serialNumber: string;
  /** SHA-256 fingerprint, colon-separated hex. */
  readonly fingerprint256: string;
  /** When it stops being valid (epoch ms), when the transport says. */
  readonly notAfterMs?: number;
}

/** Who is on the other end of the connection, as the transport knows it. */
export interface PeerInfo {
  /** `host:port` of the remote socket. */
  readonly address: string;
  /** Present only when a certificate was presented and verified; an unverified one is never here. */
  readonly certificate?: PeerCertificate;
}

/** How a principal proved who it is. */
export type AuthMethod = "mtls" | "apikey" | "jwt" | "none";

/** An authenticated caller. */
export interface Principal {
  /** Stable identity: certificate CN, API key owner or JWT `sub`. */
  readonly id: string;
  readonly method: AuthMethod;
  /** Roles the credential itself carries (an API key's, a JWT's claim); bindings add more. */
  readonly roles: readonly string[];
  /** Tenant the credential is confined to, if any. */
  readonly tenant?: string;
  /** Public id of the API key used (never the secret). */
  readonly keyId?: string;
}

/** Read access to request metadata (lower-case names). Values are untrusted input. */
export interface RequestHeaders {
  get(name: string): string | undefined;
}

/**
 * What the stages learned about a call, for the audit record: filled in as
 * the call goes through the pipeline (one object shared by every derived
 * context of the call).
 */
export interface CallNotes {
  principal?: Principal;
  /** allow, deny (authorization), or unauthenticated. */
  decision?: "allow" | "deny" | "unauthenticated";
  /** The deciding rule, or why authentication failed (never a secret). */
  reason?: string;
  /** The tenant authorization decided the call acts in. */
  tenant?: string;
}

/**
 * What the caller may see in this call, as authorization decided it: the
 * one object handlers consult for tenancy (never their own checks).
 */
export interface CallScope {
  /**
   * The tenant the call acts in: the target's tenant (or the one a creation
   * names) for a caller that holds the permission only there; undefined when
   * the caller holds it cluster-wide.
   */
  readonly tenant: string | undefined;
  /** True when the method's permission holds cluster-wide for the caller. */
  readonly clusterWide: boolean;
  /**
   * Whether the method's permission holds in `tenant` for the caller ("" is
   * no tenant: cluster-wide callers only). Lists keep only what passes.
   */
  canSee(tenant: string): boolean;
  /**
   * A short digest (hex) of everything that decides the caller's access (its
   * roles, bindings and their grants), equal as long as that is: a watch's
   * revisions carry it, so a watch resumed after the access changed lists
   * anew. Undefined when no authorization stage ran.
   */
  readonly access?: string;
}

/**
 * Everything a stage or handler knows about one call. Transport-neutral: an
 * adapter builds it from its own request; stages derive new contexts with
 * spread (`{ ...ctx, principal }`) instead of mutating.
 */
export interface CallContext {
  /** Server-generated id, returned to the client and present in every log line of the call. */
  readonly requestId: string;
  /** The method being called, with its policy. */
  readonly method: MethodSpec;
  readonly peer: PeerInfo;
  readonly headers: RequestHeaders;
  /** Epoch milliseconds after which the caller no longer waits, if it set a deadline. */
  readonly deadline: number | undefined;
  /** Aborted when the client cancels, the deadline passes or the server shuts down. */
  readonly signal: AbortSignal;
  /** Epoch milliseconds at which the call arrived. */
  readonly startedAt: number;
  /** Set by the authentication stage. */
  readonly principal?: Principal;
  /** Tenant the principal acts in; undefined means cluster-wide. Same as `scope.tenant`. */
  readonly tenant?: string;
  /** Set by the authorization stage; read it with `scopeOf(ctx)`. */
  readonly scope?: CallScope;
  /** Logger bound to this call's request id and method. */
  readonly log: Logger;
  /** Shared, mutable notes for the audit trail. */
  readonly notes: CallNotes;
}

/** The address part of `host:port` / `[v6]:port`: lockout and rate limits count per address, not per connection. */
export function sourceOf(address: string): string {
  const at = address.lastIndexOf(":");
  return (at > 0 ? address.slice(0, at) : address).replace(/^\[|\]$/g, "");
}
