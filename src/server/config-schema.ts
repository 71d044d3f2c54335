import { z } from "zod";
import {
  fenceDelayAllows,
  fenceMarginMs,
  POLICY_NAME,
  parseReplicationPolicy,
  selfFenceWindowMs,
} from "../cluster/index.js";
import { isTenantName, RpcError } from "../core/index.js";

const MIB = 1024 * 1024;
const int = (min: number, max: number) => z.number().int().min(min).max(max);
const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, "must be HOST:PORT (IPv6 in brackets)");
const path = z.string().min(1).max(4096);
/** A tenant's name (core isTenantName): 1 to 64 characters, no control or invisible formatting ones. */
const tenantName = z.string().refine(isTenantName, {
  message:
    "a tenant is 1 to 64 characters, none of them a control or invisible formatting character",
});
/** A token bucket: refill rate and burst. */
const bucket = z.strictObject({
  ratePerSecond: z.number().positive().max(1_000_000),
  burst: int(1, 10_000_000),
});
const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;
const LEVEL_ALIASES: Record<string, string> = { warning: "warn", critical: "fatal" };

/** The sections of the configuration; {@link configSchema} adds the checks across sections. */
const sections = z.strictObject({
  /** gRPC listen address; TLS always. */
  listen: hostPort.default("127.0.0.1:7443"),
  tls: z
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
    .prefault({}),
  limits: z
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
    .prefault({}),
  log: z
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
    .prefault({}),
  audit: z
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
    .prefault({}),
  metrics: z
    .strictObject({
      enabled: z.boolean().default(true),
      /** Prometheus /metrics, /healthz and /readyz; plain HTTP, so loopback only. */
      listen: hostPort.default("127.0.0.1:9464"),
    })
    .prefault({}),
  auth: z
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
    .prefault({}),
  rbac: z
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
    .prefault({}),
  pki: z
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
    .prefault({}),
  rateLimit: z
    .strictObject({
      /** Per source address, before authentication. */
      perSource: bucket.prefault({ ratePerSecond: 200, burst: 400 }),
      /** Per authenticated principal. */
      perPrincipal: bucket.prefault({ ratePerSecond: 20, burst: 40 }),
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
    .prefault({}),
  store: z
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
    }),
  shutdown: z
    .strictObject({
      /** On SIGTERM, calls in flight get this long before they are cut off. */
      drainTimeoutMs: int(0, 600_000).default(15_000),
    })
    .prefault({}),
  cluster: z
    .strictObject({
      /** How often nodes are expected to send a heartbeat. */
      heartbeatIntervalMs: int(1000, 3_600_000).default(10_000),
      /** Missed intervals before a node is NOT_READY. */
      heartbeatMissedIntervals: int(1, 100).default(3),
      /** How far ahead of the server's clock a report's timestamp may be; later ones are refused. */
      reportClockSkewMs: int(0, 300_000).default(5_000),
      /**
       * With liveness from store leases (etcd): a heartbeat that repeats the
       * node's stored report but for its time and load figures renews the
       * lease and rewrites the record only this long after its last write.
       * 0: every heartbeat is written.
       */
      reportRefreshMs: int(0, 3_600_000).default(0),
      /**
       * How long a node must have been NOT_READY before its VMs may restart
       * elsewhere. Must exceed the time a cut-off node's watchdog takes to
       * stop its VMs, or a VM could run twice.
       */
      fenceDelayMs: int(1000, 86_400_000).default(60_000),
      /**
       * An agent with no confirmed renewal of its node's lease for this long
       * stops its HA VMs (told to agents in the Welcome). Default: two thirds
       * of the fence delay; the fence delay must exceed it by a margin.
       */
      selfFenceWindowMs: int(500, 86_400_000).optional(),
      /** vCPUs placeable per physical core when planning. */
      cpuOvercommit: z.number().min(1).max(32).default(4),
      /** Memory placeable per byte of RAM when planning (1: none). */
      memoryOvercommit: z.number().min(0.5).max(4).default(1),
      /** Lease of this process's runner key; migrations of a dead process are settled after it. */
      runnerLeaseMs: int(1000, 600_000).default(10_000),
      /**
       * Where node agents reach this process for replication transfers it
       * relays (host:port, its certificate valid for the agents' server
       * name). Default: the gRPC address it listens on, as bound.
       */
      advertiseAddress: hostPort.optional(),
      /**
       * How long a migration orphaned by a dead process may still have a
       * hypervisor job running before settling aborts it (as libvirt.migrateTimeoutMs).
       */
      settleJobTimeoutMs: int(1000, 86_400_000).default(1_800_000),
      /**
       * How long a finished operation is kept after it ended: its record,
       * GetOperation of it, and a retry naming its request_id (after that,
       * the same request_id starts a new operation). At least an hour.
       */
      operationRetentionMs: int(3_600_000, 31_536_000_000).default(86_400_000),
      failover: z
        .strictObject({
          /** Restart HA VMs of failed nodes automatically. */
          enabled: z.boolean().default(true),
          intervalMs: int(100, 600_000).default(2000),
          /** Automatic restarts of one VM per window before it is left alone. */
          restartLimit: int(0, 100).default(3),
          restartWindowMs: int(60_000, 30 * 86_400_000).default(3_600_000),
        })
        .prefault({}),
      events: z
        .strictObject({
          /** Events kept at most, cluster-wide; each write removes those past it, oldest first. */
          maxCount: int(100, 1_000_000).default(10_000),
          /** Events older than this are removed. */
          maxAgeMs: int(60_000, 90 * 86_400_000).default(86_400_000),
          /** Events waiting to be written at most; more are dropped and counted. */
          queueMax: int(10, 100_000).default(1000),
          /** The same event for the same object again within this is not written again. */
          repeatWindowMs: int(0, 3_600_000).default(60_000),
        })
        .prefault({}),
    })
    .prefault({}),
  libvirt: z
    .strictObject({
      /**
       * Nodes this daemon drives itself over libvirt (no agent): each is
       * registered from here and reports its domains as heartbeats.
       */
      nodes: z
        .array(
          z.strictObject({
            id: z.string().regex(/^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/),
            /** Connection URI, for example qemu+ssh://hv01/system. Also the destination URI of migrations to it. */
            uri: z.string().min(1).max(512),
            hostname: z.string().max(253).optional(),
            cpuCores: int(1, 4096).default(1),
            memoryBytes: z.number().int().min(0).default(0),
            cpuModel: z.string().max(64).default(""),
            sharedPools: z.array(z.string().max(64)).max(64).default([]),
          }),
        )
        .max(1000)
        .default([]),
      virsh: path.default("virsh"),
      timeoutMs: int(1000, 600_000).default(30_000),
      migrateTimeoutMs: int(10_000, 86_400_000).default(1_800_000),
      /** How often domains are listed and recorded as heartbeats. */
      reportIntervalMs: int(1000, 3_600_000).default(10_000),
    })
    .prefault({}),
  storage: z
    .strictObject({
      zfs: z
        .strictObject({
          /** Drive ZFS datasets with the zfs command on this host. */
          enabled: z.boolean().default(false),
          /** The node id whose datasets live on this host (required with enabled). */
          localNode: z
            .string()
            .regex(/^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$/, "a node id")
            .optional(),
          /** The zfs program. */
          command: path.default("zfs"),
          /** Limit of each zfs command but a send. */
          timeoutMs: int(1000, 3_600_000).default(60_000),
          /** Limit of one send/receive. */
          sendTimeoutMs: int(60_000, 7 * 86_400_000).default(86_400_000),
        })
        .prefault({})
        .superRefine((zfs, ctx) => {
          if (zfs.enabled && zfs.localNode === undefined)
            ctx.addIssue({
              code: "custom",
              path: ["localNode"],
              message: "required when zfs is enabled",
            });
        }),
      rbd: z
        .strictObject({
          /** Drive Ceph RBD images with the rbd command. */
          enabled: z.boolean().default(false),
          /** The rbd program. */
          command: path.default("rbd"),
          /** Limit of each rbd command. */
          timeoutMs: int(1000, 3_600_000).default(120_000),
          /** Ceph client id (`--id`). */
          cephId: z
            .string()
            .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, "letters, digits and . _ -")
            .optional(),
          /** ceph.conf (`--conf`). */
          cephConf: path.optional(),
          /** Keyring (`--keyring`). */
          keyring: path.optional(),
        })
        .prefault({}),
      replication: z
        .strictObject({
          /** Run due replication jobs from this daemon (any number of daemons may; a lock in the store lets one run each job). */
          scheduler: z.boolean().default(true),
          /** How often due jobs are looked for. */
          tickMs: int(1000, 600_000).default(5000),
          /** Jobs this daemon runs at once. */
          maxConcurrentRuns: int(1, 64).default(2),
          /** Lease of a run lock; a daemon that dies holding one frees it after this long. */
          lockTtlMs: int(3000, 600_000).default(30_000),
          /** First retry after a failed run, doubling per failure in a row... */
          retryBaseMs: int(1000, 86_400_000).default(60_000),
          /** ...up to this (and never later than the job's interval). */
          retryMaxMs: int(1000, 7 * 86_400_000).default(3_600_000),
          /**
           * Named policies: `gold: "interval=15m keep=96"` lets a plan say
           * `policy: gold`, as clients of the upstream contract do.
           */
          policies: z
            .record(
              z.string().regex(POLICY_NAME, "a policy name (letters, digits, _ and -)"),
              z.string(),
            )
            .default({})
            .superRefine((policies, ctx) => {
              for (const [name, text] of Object.entries(policies)) {
                try {
                  parseReplicationPolicy(text);
                } catch (err) {
                  ctx.addIssue({
                    code: "custom",
                    path: [name],
                    message: err instanceof RpcError ? err.clientMessage : String(err),
                  });
                }
              }
            }),
        })
        .prefault({}),
      /** Link speed of the simulated storage's sends, bytes per second. */
      simulatedBytesPerSecond: int(1024, 1024 ** 4).default(1024 ** 3),
    })
    .prefault({}),
  dev: z
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
    .prefault({}),
  simulation: z
    .strictObject({
      /** Serve an in-process simulated cluster (on by default in dev mode, unless dev.agents). */
      enabled: z.boolean().optional(),
      nodes: int(1, 2000).default(3),
      vmsPerNode: int(0, 50).default(3),
      seed: int(0, 2 ** 31 - 1).default(1),
      /** How long a simulated migration takes. */
      migrationMs: int(0, 3_600_000).default(4000),
      /**
       * Where the simulated hypervisors keep their state, so it outlives
       * the daemon as real ones would. Default: `dev.dataDir`/simulation.json
       * in dev mode, in memory otherwise.
       */
      stateFile: path.optional(),
      /**
       * Faults to inject, for demonstrations and tests: a node cut off
       * (`partition`: it keeps running its VMs until it fences itself) or
       * dead (`kill`), `afterMs` after the daemon starts.
       */
      faults: z
        .array(
          z.strictObject({
            kind: z.enum(["partition", "kill"]),
            node: z.string().min(1).max(63),
            afterMs: int(0, 86_400_000).default(0),
          }),
        )
        .max(100)
        .default([]),
    })
    .prefault({}),
  /** Node agents' streams (AgentService.Connect). Heartbeat interval: cluster.heartbeatIntervalMs. */
  agents: z
    .strictObject({
      /** A stream whose Hello has not arrived by then is closed. */
      helloTimeoutMs: int(100, 600_000).default(10_000),
      /** Messages waiting for one agent; past this its stream is closed (STREAM_STALLED). */
      sendQueueMax: int(1, 1_000_000).default(1024),
      /**
       * Messages read from one node's streams (each a store write or read): past the
       * burst, the next waits, unread, for its token (the agent's sends back up).
       */
      messageRate: bucket.prefault({ ratePerSecond: 100, burst: 2000 }),
    })
    .prefault({}),
  /**
   * The web panel: its own HTTPS listener serving the panel's page and the
   * Connect form of the same services (same stages, same audit). On in dev
   * mode, off otherwise until `enabled` is set.
   */
  panel: z
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
    .prefault({}),
  /**
   * Measurement only (bench/): leave security stages out to see what each
   * costs. Refused unless the gRPC endpoint listens on loopback.
   */
  benchmark: z
    .strictObject({
      /** Leave out both rate limit stages (per source and per principal). */
      skipRateLimit: z.boolean().default(false),
      /** Leave out authorization: every authenticated caller may call every method. */
      skipAuthorization: z.boolean().default(false),
    })
    .prefault({}),
});

/**
 * The one configuration schema of debvisor-rpcd. The YAML file, the
 * environment variables and the flags all map onto it; unknown keys are
 * rejected. Every limit a library leaves unlimited has a bound here.
 */
export const configSchema = sections.superRefine((c, ctx) => {
  const window = selfFenceWindowMs(c.cluster.fenceDelayMs, c.cluster.selfFenceWindowMs);
  if (!fenceDelayAllows(c.cluster.fenceDelayMs, window))
    ctx.addIssue({
      code: "custom",
      path: ["cluster", "fenceDelayMs"],
      message: `must be at least the self-fence window (${window} ms) plus a margin of ${fenceMarginMs(window)} ms, or a VM could run twice`,
    });
  for (const key of ["skipRateLimit", "skipAuthorization"] as const) {
    if (c.benchmark[key] && !isLoopback(c.listen))
      ctx.addIssue({
        code: "custom",
        path: ["benchmark", key],
        message: "a benchmark setting, refused unless listen is a loopback address",
      });
  }
});

/** True for 127.0.0.0/8, [::1] and localhost. */
function isLoopback(hostPort: string): boolean {
  const host = hostPort.slice(0, hostPort.lastIndexOf(":"));
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host) || host === "[::1]" || host === "localhost";
}

/** Validated, fully-defaulted, frozen configuration. */
export type Config = Readonly<z.infer<typeof configSchema>>;
