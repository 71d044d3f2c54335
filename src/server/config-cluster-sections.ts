// The cluster sections of the configuration: liveness and fencing, the hypervisor and storage drivers, the simulation and node agents.
// Composed into the one schema by config-schema.ts.
import { z } from "zod";
import { POLICY_NAME, parseReplicationPolicy } from "../cluster/index.js";
import { RpcError } from "../core/index.js";
import { bucket, hostPort, int, path } from "./config-primitives.js";

/** `cluster`: heartbeats, liveness, fencing, failover and migration. */
export const clusterSection = z
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
        /**
         * HA VMs a pass works on at once (restarts elsewhere, starts again on a node
         * back): one whose target is slow to answer holds up only itself.
         */
        maxParallel: int(1, 16).default(4),
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
  .prefault({});

/** `libvirt`: the hypervisor driver and the nodes it reaches. */
export const libvirtSection = z
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
  .prefault({});

/** `storage`: the ZFS and RBD drivers and replication. */
export const storageSection = z
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
  .prefault({});

/** `simulation`: the simulated hypervisors of dev mode and tests. */
export const simulationSection = z
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
  .prefault({});

/** Node agents' streams (AgentService.Connect). Heartbeat interval: cluster.heartbeatIntervalMs. */
export const agentsSection = z
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
  .prefault({});
