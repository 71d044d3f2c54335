// The security sections of the configuration: TLS, authentication, RBAC, the CA and rate limits.
// Composed into the one schema by config-schema.ts.
import { z } from "zod";
import { bucket, int, path, tenantName } from "./config-primitives.js";

/** `tls`: the server's certificate, key and client CA (TLS always). */
export const tlsSection = z
  .strictObject({
    /** Server certificate chain (PEM). Env RPC_TLS_CERT. Default /etc/debvisor/rpc/cert.pem (dev mode: its own). */
    cert: path.optional(),
    /** Server private key (PEM). Env RPC_TLS_KEY. Default /etc/debvisor/rpc/key.pem. */
    key: path.optional(),
    /** CA that signs client certificates (PEM). Env RPC_TLS_CA. Default /etc/debvisor/rpc/ca.pem. */
    clientCa: path.optional(),
    /** Lowest TLS version accepted. */
    minVersion: z.enum(["TLSv1.2", "TLSv1.3"]).default("TLSv1.3"),
    /** A TLS handshake not finished by then is dropped. */
    handshakeTimeoutMs: int(1000, 120_000).default(10_000),
  })
  .prefault({});

/** `auth`: JWT issuers and the other ways in. */
export const authSection = z
  .strictObject({
    jwt: z
      .strictObject({
        /** Trusted token issuers; none means JWTs are refused. */
        issuers: z
          .array(
            z
              .strictObject({
                /** Required `iss`. */
                issuer: z.string().min(1).max(256).default("debvisor-auth"),
                /** Required `aud`. */
                audience: z.string().min(1).max(256).default("debvisor-rpc"),
                /** Accepted signature algorithms (asymmetric only). */
                algorithms: z
                  .array(z.enum(["RS256", "ES256", "EdDSA"]))
                  .min(1)
                  .default(["RS256", "ES256", "EdDSA"]),
                /** SPKI PEM public key files. */
                publicKeys: z.array(path).max(32).default([]),
                /** A JWKS file (keys with kid). */
                jwksFile: path.optional(),
                /** Claim with the principal's roles (string array). */
                rolesClaim: z.string().min(1).max(128).default("roles"),
                /** Claim with the tenant, if tokens carry one: a token without a valid one is then refused. */
                tenantClaim: z.string().min(1).max(128).optional(),
                /** Roles this issuer's tokens may carry; a token with any other is refused. Omitted: any. */
                allowedRoles: z.array(z.string().min(1).max(64)).max(256).optional(),
                /** Tenants this issuer's tokens may name (needs tenantClaim). Omitted: any. */
                allowedTenants: z.array(tenantName).max(4096).optional(),
                /** Tolerated clock skew on exp/nbf. */
                clockSkewSeconds: int(0, 300).default(60),
              })
              .refine((i) => i.allowedTenants === undefined || i.tenantClaim !== undefined, {
                message: "allowedTenants needs tenantClaim",
                path: ["allowedTenants"],
              }),
          )
          .max(16)
          .default([])
          // A JWT's principal is `jwt:<issuer>:<sub>`: with issuers "a" and "a:b", the sub
          // "b:x" of "a" would be "x" of "a:b". Issuers that could collide are refused.
          .refine(
            (list) => !list.some((a) => list.some((b) => b.issuer.startsWith(`${a.issuer}:`))),
            {
              message:
                "no issuer may be another followed by ':' (their principals jwt:<issuer>:<sub> would collide)",
            },
          ),
      })
      .prefault({}),
    lockout: z
      .strictObject({
        /** Failed authentications of one credential (API key id, JWT iss+sub) that lock it. */
        maxFailures: int(1, 1000).default(5),
        /** Window for counting failures, and the cool-down once locked. */
        windowMs: int(1000, 86_400_000).default(300_000),
        /** Failures from one address after which its failed attempts are slowed down (never refused). */
        sourceMaxFailures: int(1, 100_000).default(20),
        /** How long a failed attempt from a throttled address waits before its answer. */
        throttleDelayMs: int(0, 10_000).default(1000),
      })
      .prefault({}),
    apiKeys: z
      .strictObject({
        /** How long a rotated key keeps working beside its successor. */
        rotationGraceMs: int(0, 30 * 86_400_000).default(86_400_000),
      })
      .prefault({}),
  })
  .prefault({});

/** `rbac`: roles and bindings from the file, beside those in the store. */
export const rbacSection = z
  .strictObject({
    /** Custom roles: a name and its grants (`storage:*`, `node:list`, `*`). */
    roles: z
      .array(
        z.strictObject({
          name: z.string().regex(/^[a-z][a-z0-9-]{0,62}$/, "lower-case letters, digits and -"),
          grants: z
            .array(
              z
                .string()
                .regex(
                  /^(\*|[a-z][a-z0-9-]*(:[a-z][a-z0-9-]*)*(:\*)?)$/,
                  "a permission, a:b:* or *",
                ),
            )
            .max(256),
        }),
      )
      .max(256)
      .default([]),
    /** Principals bound to roles, cluster-wide or in one tenant. */
    bindings: z
      .array(
        z.strictObject({
          principal: z.string().min(1).max(256),
          roles: z.array(z.string().min(1).max(63)).min(1).max(64),
          tenant: tenantName.optional(),
        }),
      )
      .max(10_000)
      .default([]),
  })
  .prefault({});

/** `pki`: the built-in CA and its certificates' terms. */
export const pkiSection = z
  .strictObject({
    /** The cluster CA certificate that signs enrolled nodes (dev mode: its own). */
    caCert: path.optional(),
    /** Its private key; without it this server cannot enroll or renew (an external CA then issues). */
    caKey: path.optional(),
    /** Lifetime of certificates issued to nodes; renewal keeps them short. */
    certificateDays: int(1, 397).default(30),
    /** A certificate renews only this long after it was issued: a chain grows by one a period at most. */
    minRenewalAgeSeconds: int(0, 86_400).default(3600),
    /** Enroll calls per address (it needs no identity, so it is limited before anything else). */
    enrollLimit: bucket.prefault({ ratePerSecond: 1 / 6, burst: 20 }),
  })
  .refine((p) => p.minRenewalAgeSeconds < p.certificateDays * 8640, {
    // Agents renew from a tenth of a term on (renewAtFraction at least 0.1).
    message:
      "pki.minRenewalAgeSeconds must be under a tenth of certificateDays: agents renew from a tenth of a term on, and would be refused until their certificates expire",
    path: ["minRenewalAgeSeconds"],
  })
  .prefault({});

/** `rateLimit`: token buckets per source, principal and role. */
export const rateLimitSection = z
  .strictObject({
    /** Per source address, before authentication. */
    perSource: bucket.prefault({ ratePerSecond: 200, burst: 400 }),
    /** Per authenticated principal. */
    perPrincipal: bucket.prefault({ ratePerSecond: 20, burst: 40 }),
    /** Every credential confined to one tenant together, on top of each one's own limit. */
    perTenant: bucket.prefault({ ratePerSecond: 100, burst: 200 }),
    /** Roles with their own principal limit; the most generous of a principal's applies. */
    perRole: z.record(z.string().regex(/^[a-z][a-z0-9-]{0,62}$/), bucket).default({}),
    /** Tokens a call costs, by gRPC path; unlisted methods cost 1. */
    methodCost: z
      .record(
        z.string().regex(/^\/[A-Za-z0-9_.]+\/[A-Za-z0-9_]+$/, "a gRPC path /pkg.Service/Method"),
        int(1, 1000),
      )
      .default({
        "/debvisor.v1.MigrationService/MigrateVM": 10,
        "/debvisor.v1.MigrationService/FailoverVM": 10,
        "/debvisor.v1.StorageService/RunZfsReplication": 10,
        "/debvisor.v1.StorageService/PruneSnapshots": 5,
        "/debvisor.v1.AccessService/CreateApiKey": 5,
        "/debvisor.v1.AccessService/RotateApiKey": 5,
      }),
  })
  .prefault({});
