import { existsSync, readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import type { z } from "zod";
import { mergeConfigLayers } from "../client/index.js";
import { type Config, configSchema } from "./config-schema.js";

/** Default configuration file; a missing default file is not an error, a missing named one is. */
export const DEFAULT_CONFIG_PATH = "/etc/debvisor/rpcd.yaml";
const MAX_CONFIG_BYTES = 1024 * 1024;

/** A configuration problem; the message names the offending key path and is safe to print. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

/** Where configuration comes from, lowest precedence first: file, then environment, then flags. */
export interface ConfigSources {
  /** Path given with --config; undefined means the default path, if it exists. */
  readonly configPath?: string;
  readonly env?: NodeJS.ProcessEnv;
  /** Values from command-line flags, already shaped like the schema. */
  readonly overrides?: Record<string, unknown>;
}

/** The existing environment variables of deployed DebVisor nodes, and where they land. */
export const ENV_KEYS: Readonly<Record<string, readonly [string, string]>> = {
  RPC_TLS_CERT: ["tls", "cert"],
  RPC_TLS_KEY: ["tls", "key"],
  RPC_TLS_CA: ["tls", "clientCa"],
  RPC_LOG_LEVEL: ["log", "level"],
  RPC_LOG_FILE: ["log", "file"],
  RPC_AUDIT_LOG: ["audit", "path"],
};

/** Reads, merges and validates configuration; throws ConfigError naming the key on any problem. */
export function loadConfig(sources: ConfigSources): Config {
  const fromFile = readConfigFile(sources.configPath);
  const fromEnv: Record<string, unknown> = {};
  for (const [name, [section, key]] of Object.entries(ENV_KEYS)) {
    const value = sources.env?.[name];
    if (value !== undefined && value !== "") setPath(fromEnv, [section, key], value);
  }
  const merged = mergeConfigLayers(mergeConfigLayers(fromFile, fromEnv), sources.overrides ?? {});
  return parseConfig(merged);
}

/** Validates a plain object against the schema. */
export function parseConfig(input: unknown): Config {
  const result = configSchema.safeParse(input);
  if (!result.success) throw new ConfigError(formatIssues(result.error.issues));
  return deepFreeze(result.data);
}

function readConfigFile(configPath: string | undefined): Record<string, unknown> {
  const file = configPath ?? DEFAULT_CONFIG_PATH;
  if (!existsSync(file)) {
    if (configPath === undefined) return {};
    throw new ConfigError(`--config: file not found: ${file}`);
  }
  const text = readFileSync(file, "utf8");
  if (text.length > MAX_CONFIG_BYTES) throw new ConfigError(`${file}: larger than 1 MiB`);
  let doc: unknown;
  try {
    doc = parseYaml(text, { maxAliasCount: 100 });
  } catch (err) {
    throw new ConfigError(`${file}: not valid YAML: ${(err as Error).message}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== "object" || Array.isArray(doc)) {
    throw new ConfigError(`${file}: must be a mapping of keys to values`);
  }
  return doc as Record<string, unknown>;
}

function formatIssues(issues: readonly z.core.$ZodIssue[]): string {
  return issues
    .map((issue) => {
      const at = issue.path.map(String).join(".");
      if (issue.code === "unrecognized_keys") {
        return issue.keys.map((k) => `${at === "" ? k : `${at}.${k}`}: unknown key`).join("\n");
      }
      return `${at === "" ? "(root)" : at}: ${issue.message}`;
    })
    .join("\n");
}

function setPath(target: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    if (typeof node[key] !== "object" || node[key] === null) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1] as string] = value;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function deepFreeze<T>(value: T): T {
  if (isPlainObject(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
