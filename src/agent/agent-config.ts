import { existsSync, readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { AgentError, mergeConfigLayers } from "../client/index.js";
import { BOOT_ID_FILE, migrationUriProblem } from "../drivers/index.js";

const int = (min: number, max: number) => z.number().int().min(min).max(max);
const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, "must be HOST:PORT (IPv6 in brackets)");

/**
 * The one configuration schema of `debvisor-agent run` (and `status`). The
 * YAML file (`--config`, default /etc/debvisor/agent.yaml when present),
 * the DEBVISOR_AGENT_* environment and the flags all map onto it, in that
 * order of precedence; unknown keys are refused.
 */
export const agentConfigSchema = z.strictObject({
  /** The agent's directory: node.key, node.crt, ca.crt (from enroll), its journal, the simulation. Env DEBVISOR_AGENT_DIR. */
  dir: z.string().min(1).max(4096).default("/var/lib/debvisor-agent"),
  /**
   * Where the host's boot id is read. A different id than the one the agent
   * kept is a reboot since it last ran: it tells the HA VMs that ran then
   * and are stopped now as self-fenced. Env DEBVISOR_AGENT_BOOT_ID_FILE.
   */
  bootIdFile: z.string().min(1).max(4096).default(BOOT_ID_FILE),
  /** Control-plane addresses, tried in turn. Env DEBVISOR_AGENT_SERVERS (comma-separated). */
  servers: z.array(hostPort).max(32).default([]),
  /** Name to verify server certificates against, when it differs from the address. Env DEBVISOR_AGENT_TLS_SERVER_NAME. */
  tlsServerName: z.string().min(1).max(253).optional(),
  driver: z
    .strictObject({
      /** `sim`: a simulated hypervisor kept in `dir`; `libvirt`: virsh on `uri`. Env DEBVISOR_AGENT_DRIVER. */
      kind: z.enum(["sim", "libvirt"]).default("libvirt"),
      /** libvirt connection URI. Env DEBVISOR_AGENT_LIBVIRT_URI. */
      uri: z.string().min(1).max(1024).default("qemu:///system"),
      /** The virsh program. */
      virsh: z.string().min(1).max(4096).default("virsh"),
      /**
       * How other nodes' libvirtd reach this one for a migration (reported
       * to the control plane). Default qemu+tls://<hostname>/system.
       */
      migrationUri: z
        .string()
        .min(1)
        .max(256)
        .superRefine((uri, ctx) => {
          const problem = migrationUriProblem(uri);
          if (problem !== undefined) ctx.addIssue({ code: "custom", message: problem });
        })
        .optional(),
    })
    .prefault({}),
  sim: z
    .strictObject({
      /** Domains generated on first start. */
      vms: int(0, 50).default(3),
      seed: int(0, 2 ** 31 - 1).default(1),
      /** How long a start or stop takes. */
      actionMs: int(0, 600_000).default(0),
      /** How long a migration from this node takes. */
      migrationMs: int(0, 3_600_000).default(4000),
      /**
       * The simulated cluster's shared storage directory (VM definitions and
       * per-disk locks with fencing tokens), the same for every node's agent
       * on this host. Unset: starts are not fenced and nothing can be recovered here.
       */
      sharedDir: z.string().min(1).max(4096).optional(),
    })
    .prefault({}),
  storage: z
    .strictObject({
      /**
       * The node's storage: `none`; `sim`: simulated datasets (the disks of
       * the simulated domains) kept in `dir`/sim-storage.json; `zfs` or
       * `rbd`: the command line on this host. Env DEBVISOR_AGENT_STORAGE.
       */
      kind: z.enum(["none", "sim", "zfs", "rbd"]).default("none"),
      /** sim: the size of each dataset created on first start (its full send moves this much). */
      simDatasetBytes: int(0, 2 ** 40).default(64 * 1024 * 1024),
      /** The zfs program. */
      zfsCommand: z.string().min(1).max(4096).default("zfs"),
      /** The rbd program. */
      rbdCommand: z.string().min(1).max(4096).default("rbd"),
    })
    .prefault({}),
  reconnect: z
    .strictObject({
      /** First wait after a lost stream; doubles up to maxMs, with full jitter. */
      initialMs: int(10, 600_000).default(500),
      maxMs: int(10, 3_600_000).default(30_000),
    })
    .prefault({}),
  /** Heartbeat interval until the server's Welcome says otherwise. */
  heartbeatIntervalMs: int(100, 3_600_000).default(10_000),
  /** Renew the certificate once this fraction of its lifetime has passed. */
  renewAtFraction: z
    .number()
    .min(0.1)
    .max(0.95)
    .default(2 / 3),
  /** Env DEBVISOR_AGENT_LOG_LEVEL. */
  logLevel: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
});

/** Validated, fully-defaulted agent configuration. */
export type AgentConfig = Readonly<z.infer<typeof agentConfigSchema>>;

/** Default configuration file; used when present. */
export const DEFAULT_AGENT_CONFIG = "/etc/debvisor/agent.yaml";

const ENV: Readonly<Record<string, (v: string) => Record<string, unknown>>> = {
  DEBVISOR_AGENT_DIR: (v) => ({ dir: v }),
  DEBVISOR_AGENT_SERVERS: (v) => ({ servers: v.split(",").map((s) => s.trim()) }),
  DEBVISOR_AGENT_BOOT_ID_FILE: (v) => ({ bootIdFile: v }),
  DEBVISOR_AGENT_TLS_SERVER_NAME: (v) => ({ tlsServerName: v }),
  DEBVISOR_AGENT_DRIVER: (v) => ({ driver: { kind: v } }),
  DEBVISOR_AGENT_LIBVIRT_URI: (v) => ({ driver: { uri: v } }),
  DEBVISOR_AGENT_STORAGE: (v) => ({ storage: { kind: v } }),
  DEBVISOR_AGENT_LOG_LEVEL: (v) => ({ logLevel: v.toLowerCase() }),
};

/**
 * Reads the file, the environment and the flags (already shaped like the
 * schema), merges them and validates; an AgentError names the key.
 */
export function loadAgentConfig(sources: {
  configPath?: string;
  env: NodeJS.ProcessEnv;
  flags: Record<string, unknown>;
}): AgentConfig {
  let merged = readFile(sources.configPath);
  for (const [name, map] of Object.entries(ENV)) {
    const v = sources.env[name];
    if (v !== undefined && v !== "") merged = mergeConfigLayers(merged, map(v));
  }
  merged = mergeConfigLayers(merged, sources.flags);
  const parsed = agentConfigSchema.safeParse(merged);
  if (!parsed.success)
    throw new AgentError(
      parsed.error.issues
        .map((i) => `${i.path.map(String).join(".") || "(root)"}: ${i.message}`)
        .join("\n"),
    );
  return Object.freeze(parsed.data);
}

function readFile(path: string | undefined): Record<string, unknown> {
  const file = path ?? DEFAULT_AGENT_CONFIG;
  if (!existsSync(file)) {
    if (path === undefined) return {};
    throw new AgentError(`--config: file not found: ${file}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(file, "utf8"), { maxAliasCount: 100 });
  } catch (err) {
    throw new AgentError(`${file}: not valid YAML: ${(err as Error).message}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== "object" || Array.isArray(doc))
    throw new AgentError(`${file}: must be a mapping of keys to values`);
  return doc as Record<string, unknown>;
}
