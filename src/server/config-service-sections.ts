// The service sections of the configuration: limits, logging, audit, metrics, the state store, shutdown, dev mode, the web panel and benchmark settings.
// Composed into the one schema by config-schema.ts.
import { z } from "zod";
import { MAX_SESSIONS_PER_USER } from "../panel/index.js";
import {
  bucket,
  hostPort,
  int,
  LEVEL_ALIASES,
  LOG_LEVELS,
  MIB,
  path,
} from "./config-primitives.js";

/** `limits`: bounds on messages, calls, streams and watches. */
export const limitsSection = z
  .strictObject({
    /** Largest request message, after decompression. */
    maxRequestBytes: int(1024, 64 * MIB).default(MIB),
    /** Largest response message. */
    maxResponseBytes: int(1024, 256 * MIB).default(10 * MIB),
    /** Concurrent calls on one HTTP/2 connection. */
    maxConcurrentStreams: int(1, 10_000).default(100),
    /** HTTP/2 session memory per connection (nghttp2 buffers), in MiB. */
    maxSessionMemoryMib: int(1, 1024).default(32),
    /** Total size of request headers (metadata). */
    maxMetadataBytes: int(1024, MIB).default(16 * 1024),
    /** Number of request header fields. */
    maxHeaderPairs: int(16, 4096).default(128),
    /** Server keepalive ping interval. */
    keepaliveTimeMs: int(10_000, 86_400_000).default(300_000),
    /** A keepalive ping not answered by then closes the connection. */
    keepaliveTimeoutMs: int(1000, 600_000).default(20_000),
    /** A connection with no call for this long is closed. */
    maxConnectionIdleMs: int(1000, 86_400_000).default(900_000),
    /** Connections are recycled after this long (spreads load after scale-out). */
    maxConnectionAgeMs: int(10_000, 7 * 86_400_000).default(3_600_000),
    /** Calls in flight at recycling get this long to finish. */
    maxConnectionAgeGraceMs: int(1000, 3_600_000).default(60_000),
    /** Open connections at most; lowered to leave reservedFds of the fd limit free. */
    maxConnections: int(1, 1_000_000).default(4096),
    /** Open connections from one source address at most. */
    maxConnectionsPerAddress: int(1, 1_000_000).default(256),
    /** A new stream must have sent its complete first message (after its headers) by then. */
    firstMessageTimeoutMs: int(100, 600_000).default(10_000),
    /** File descriptors kept free for the health endpoints, the store, the audit trail and logs. */
    reservedFds: int(16, 65_536).default(128),
    /** A streaming response left unread by its client for this long is closed (STREAM_STALLED). */
    streamWriteStallMs: int(1000, 3_600_000).default(30_000),
    /** Watches (list, event and replication streams) one principal holds open at once, per tenant. */
    watchesPerPrincipal: int(1, 100_000).default(64),
    /** Watches all the principals confined to one tenant hold open at once. */
    watchesPerTenant: int(1, 1_000_000).default(256),
  })
  .prefault({});

/** `log`: level and format of the daemon's log. */
export const logSection = z
  .strictObject({
    /** Env RPC_LOG_LEVEL; case-insensitive, `warning` and `critical` accepted. */
    level: z
      .preprocess(
        (v) => (typeof v === "string" ? (LEVEL_ALIASES[v.toLowerCase()] ?? v.toLowerCase()) : v),
        z.enum(LOG_LEVELS),
      )
      .default("info"),
    /** Log to this file instead of stdout. Env RPC_LOG_FILE. */
    file: path.optional(),
    /** `json`, `pretty` (lines for people), or `auto`: pretty on a terminal, JSON otherwise. */
    format: z.enum(["auto", "json", "pretty"]).default("auto"),
  })
  .prefault({});

/** `audit`: where the audit trail is kept and how it is rotated. */
export const auditSection = z
  .strictObject({
    /** Record every call. Turning it off is for benchmarks; production keeps it on. */
    enabled: z.boolean().default(true),
    /** Audit trail file (JSON lines). Env RPC_AUDIT_LOG. Default /var/log/debvisor/rpc-audit.log; dev mode DATA_DIR/audit.log. */
    path: path.optional(),
    /** A file holding the HMAC key for the hash chain (at least 32 bytes). */
    hmacKeyFile: path.optional(),
    /** Rotate past this size... */
    maxBytes: int(1024 * 1024, 64 * 1024 * 1024 * 1024).default(100 * MIB),
    /** ...or this age. */
    maxAgeMs: int(60_000, 366 * 86_400_000).default(86_400_000),
    /** While the trail cannot be written, still serve read-only calls (mutating calls are always refused). */
    allowReadsWhenFailing: z.boolean().default(false),
    refusals: z
      .strictObject({
        /** Unauthenticated and rate-limited calls: one record per source and reason per interval. */
        intervalMs: int(1000, 3_600_000).default(60_000),
        /** Sources recorded apart per interval; the rest are counted together under peer `*`. */
        maxSources: int(1, 100_000).default(1000),
      })
      .prefault({}),
    forward: z
      .strictObject({
        /** A second copy, written and fsynced with the first (put it on another disk). */
        copyPath: path.optional(),
        /** Also send each record to syslog (facility auth, tag debvisor-audit). */
        syslog: z.boolean().default(false),
      })
      .prefault({}),
  })
  .prefault({});

/** `metrics`: the HTTP endpoint for /metrics and health. */
export const metricsSection = z
  .strictObject({
    enabled: z.boolean().default(true),
    /** Prometheus /metrics, /healthz and /readyz; plain HTTP, so loopback only. */
    listen: hostPort.default("127.0.0.1:9464"),
  })
  .prefault({});

/** `store`: the state store backend (SQLite or etcd). */
export const storeSection = z
  .strictObject({
    /** `sqlite` (embedded, default) or `etcd` (for several control-plane nodes). */
    backend: z.enum(["sqlite", "etcd"]).default("sqlite"),
    /** SQLite file. Default /var/lib/debvisor-rpc/state.db; dev mode: DATA_DIR/state.db. */
    path: path.optional(),
    /** etcd client URLs, `http(s)://host:port`. */
    endpoints: z
      .array(z.string().regex(/^https?:\/\/[^\s/]+$/, "must be http(s)://HOST:PORT"))
      .max(16)
      .default([]),
    /** Every key lives under this etcd prefix. */
    prefix: z
      .string()
      .regex(/^\/[\x21-\x7e]*\/$/, "must start and end with / (printable ASCII)")
      .default("/debvisor/"),
    /** TLS to etcd: CA to verify it, and a client certificate if etcd asks for one. */
    tls: z
      .strictObject({ ca: path.optional(), cert: path.optional(), key: path.optional() })
      .prefault({}),
    /** Give up connecting to etcd after this long. */
    dialTimeoutMs: int(100, 60_000).default(5000),
  })
  .prefault({})
  .superRefine((s, ctx) => {
    if (s.backend === "etcd" && s.endpoints.length === 0) {
      ctx.addIssue({
        code: "custom",
        path: ["endpoints"],
        message: "required for the etcd backend",
      });
    }
  });

/** `shutdown`: how long calls may drain at SIGTERM. */
export const shutdownSection = z
  .strictObject({
    /** On SIGTERM, calls in flight get this long before they are cut off. */
    drainTimeoutMs: int(0, 600_000).default(15_000),
  })
  .prefault({});

/** `dev`: dev mode's embedded defaults. */
export const devSection = z
  .strictObject({
    /** Development mode: self-made CA and certificates, simulated cluster. */
    enabled: z.boolean().default(false),
    /** Where dev mode keeps its CA, certificates and hvctl.yaml. */
    dataDir: path.default("./.debvisor"),
    /**
     * The dev cluster's nodes as `debvisor-agent` processes (what `npm
     * start` runs) instead of the embedded simulation: each node a
     * simulated hypervisor in its own process and directory
     * (`dataDir`/nodes/<id>), enrolled with the dev CA, stopped with the
     * daemon. Flag `--dev-agents`.
     */
    agents: z
      .strictObject({
        enabled: z.boolean().default(false),
        nodes: int(1, 16).default(3),
        /** VMs each node starts with (first start only). */
        vmsPerNode: int(0, 50).default(3),
        /** How long a migration between two agents takes. */
        migrationMs: int(0, 3_600_000).default(4000),
        /** Log level of the agents (their lines are prefixed with the node). */
        logLevel: z.enum(["trace", "debug", "info", "warn", "error", "silent"]).default("info"),
      })
      .prefault({}),
  })
  .prefault({});

/**
 * The web panel: its own HTTPS listener serving the panel's page and the
 * Connect form of the same services (same stages, same audit). On in dev
 * mode, off otherwise until `enabled` is set.
 */
export const panelSection = z
  .strictObject({
    /** Serve the panel (default: on in dev mode, off otherwise). */
    enabled: z.boolean().optional(),
    /** HTTPS listen address of the panel; TLS with the server certificate. */
    listen: hostPort.default("127.0.0.1:7444"),
    /**
     * Origins (scheme://host:port) the panel is reached at, besides
     * https://<the Host header> itself (for a proxy in front).
     */
    origins: z
      .array(z.string().regex(/^https:\/\/[^/\s]+$/, "must be https://HOST[:PORT]"))
      .max(20)
      .default([]),
    /** Lifetime of an access token. */
    accessTtlMs: int(10_000, 3_600_000).default(300_000),
    /** Absolute lifetime of a sign-in session. */
    sessionTtlMs: int(60_000, 30 * 86_400_000).default(43_200_000),
    /** Sign-in sessions a user may have at once; a sign-in past it ends the oldest. */
    maxSessionsPerUser: int(1, 1000).default(MAX_SESSIONS_PER_USER),
    /** Sign-in attempts (password and OpenID Connect) per source: an IPv4 address, an IPv6 /64. */
    loginPerAddress: bucket.default({ ratePerSecond: 1 / 6, burst: 10 }),
    /** Sign-in attempts at one account from browsers that never signed in to it. */
    loginPerAccount: bucket.default({ ratePerSecond: 1 / 60, burst: 5 }),
    /**
     * Sign-in with an OpenID Connect issuer (authorization code with PKCE).
     * A person acts as `oidc:<issuer>#<principalClaim>`; bindings give roles and tenants.
     */
    oidc: z
      .strictObject({
        /** The issuer (https), exactly as its ID tokens' `iss`; discovered at /.well-known/openid-configuration. */
        issuer: z
          .string()
          .max(200)
          .regex(/^https:\/\/[^\s#?]+$/, "must be an https:// URL without query or fragment"),
        /** Shown on the sign-in page as "Sign in with <name>". */
        name: z.string().min(1).max(64).default("single sign-on"),
        /** The client id registered at the issuer. */
        clientId: z.string().min(1).max(256),
        /** File holding the client secret; omitted: a public client (PKCE alone). Never logged. */
        clientSecretFile: path.optional(),
        /** This panel's callback as registered at the issuer: https://HOST[:PORT]/auth/oidc/callback. */
        redirectUrl: z
          .string()
          .max(512)
          .regex(
            /^https:\/\/[^/\s?#]+\/auth\/oidc\/callback$/,
            "must be https://HOST[:PORT]/auth/oidc/callback",
          ),
        /** Scopes asked for; must include openid. */
        scopes: z
          .array(z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]{1,64}$/))
          .max(16)
          .default(["openid", "profile", "email"])
          .refine((s) => s.includes("openid"), { message: "must include openid" }),
        /** ID token claim naming the person: the principal is oidc:<issuer>#<its value>. */
        principalClaim: z.string().min(1).max(64).default("sub"),
        /** CA bundle (PEM) trusted for the issuer's TLS, for a private issuer; omitted: the system's. */
        caFile: path.optional(),
      })
      .optional(),
  })
  .prefault({});

/**
 * Measurement only (bench/): leave security stages out to see what each
 * costs. Refused unless the gRPC endpoint listens on loopback.
 */
export const benchmarkSection = z
  .strictObject({
    /** Leave out both rate limit stages (per source and per principal). */
    skipRateLimit: z.boolean().default(false),
    /** Leave out authorization: every authenticated caller may call every method. */
    skipAuthorization: z.boolean().default(false),
  })
  .prefault({});
