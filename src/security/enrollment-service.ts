// EnrollmentService: tokens, enrollment, renewal, revocation (and the
// revoked server certificates clients refuse) and the issued-certificate list. This file holds the dependencies, the per-method
// policies and the composition; the handlers live in *-handlers.ts beside it.
import { type Clock, defineService, type ServiceBinding } from "../core/index.js";
import { EnrollmentService } from "../gen/debvisor/v1/pki_pb.js";
import type { CertificateAuthority } from "../pki/index.js";
import type { KvStore } from "../store/index.js";
import type { AccessPolicy } from "./access-evaluator.js";
import { createCertificateHandlers } from "./certificate-handlers.js";
import { type CertificateIssuer, createCertificateIssuer } from "./certificate-issuer.js";
import { type CertificateLedger, createCertificateLedger } from "./certificate-ledger.js";
import { createEnrollmentTokenHandlers } from "./enrollment-token-handlers.js";
import type { Lockout } from "./lockout.js";
import type { BucketLimit } from "./rate-limiter.js";
import { createRevocationHandlers } from "./revocation-handlers.js";
import type { Revocations } from "./revocations.js";
import type { RevokedServerCertificates } from "./revoked-server-certificates.js";
import type { StoredBindings } from "./stored-bindings.js";

/** Dependencies of the EnrollmentService handlers. */
export interface EnrollmentServiceDeps {
  readonly store: KvStore;
  readonly clock: Clock;
  /** The cluster CA; undefined when this server holds no CA key (then issuing answers FAILED_PRECONDITION). */
  readonly ca: CertificateAuthority | undefined;
  readonly revocations: Revocations;
  /** The revoked server certificates agents are told to refuse, for ListRevokedServerCertificates. */
  readonly revokedServers: Pick<RevokedServerCertificates, "current">;
  /** Enrolled nodes are bound to the node role (acting only for themselves). */
  readonly bindings: StoredBindings;
  /** The policy in force, for the no-escalation checks on tokens and issued names. */
  readonly policy: () => AccessPolicy;
  /** Bad tokens count toward this lockout, per address. */
  readonly lockout: Lockout;
  /** Client certificate lifetime (default 30 days). */
  readonly certificateDays?: number;
  /**
   * How long after it was issued a certificate may renew (default an hour).
   * Each renewal is a new certificate that renews in turn: without it, any
   * certificate's holder could add records to the ledger as fast as the
   * rate limit lets it, for ever.
   */
  readonly minRenewalAgeMs?: number;
  /** Enroll calls per address (default a burst of 20, then one every 6 s). */
  readonly enrollLimit?: BucketLimit;
  /** Whether a name is a node the cluster knows (registered); its certificates are a cluster admin's to issue. */
  readonly isNode?: (name: string, signal: AbortSignal) => Promise<boolean>;
}

/** What the EnrollmentService's handler parts share, built once per service. */
export interface EnrollmentShared {
  readonly deps: EnrollmentServiceDeps;
  /** The default client certificate term in days (`certificateDays`, default 30). */
  readonly days: number;
  readonly ledger: CertificateLedger;
  readonly issuer: CertificateIssuer;
}

/** EnrollmentService: tokens, enrollment, renewal, revocation and the issued-certificate list. */
export function createEnrollmentService(deps: EnrollmentServiceDeps): ServiceBinding {
  const days = deps.certificateDays ?? 30;
  const ledger = createCertificateLedger(deps.store, deps.clock);
  const issuer = createCertificateIssuer({ ca: deps.ca, clock: deps.clock, ledger, days });
  const shared: EnrollmentShared = { deps, days, ledger, issuer };

  return defineService(
    EnrollmentService,
    {
      // The cluster CA is cluster-wide: a tenant-confined caller may not use it.
      createEnrollmentToken: {
        permission: "pki:token:create",
        mutating: true,
        target: { kind: "cluster" },
      },
      enroll: { permission: null, mutating: true, access: "public" },
      renewCertificate: { permission: null, mutating: true },
      revokeCertificate: {
        permission: "pki:cert:revoke",
        mutating: true,
        target: { kind: "cluster" },
      },
      listCertificates: {
        permission: "pki:cert:list",
        mutating: false,
        target: { kind: "cluster" },
      },
      issueCertificate: {
        permission: "pki:cert:issue",
        mutating: true,
        target: { kind: "cluster" },
      },
      // Not secret: every server certificate's serial is shown to whoever connects.
      listRevokedServerCertificates: { permission: null, mutating: false },
    },
    {
      ...createEnrollmentTokenHandlers(shared),
      ...createCertificateHandlers(shared),
      ...createRevocationHandlers(shared),
    },
  );
}
