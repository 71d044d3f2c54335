import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "../core/index.js";
import { createEtcdStore, createSqliteStore, type KvStore } from "../store/index.js";
import { ConfigError } from "./config-loader.js";
import type { Config } from "./config-schema.js";

/** Where the embedded store lives when nothing says otherwise. */
export const DEFAULT_SQLITE_PATH = "/var/lib/debvisor-rpc/state.db";

/**
 * Opens the configured state store. Backends are chosen here, explicitly;
 * dev mode defaults to SQLite in its data directory.
 */
export function openStore(config: Config, logger: Logger): KvStore {
  const s = config.store;
  if (s.backend === "sqlite") {
    const path =
      s.path ?? (config.dev.enabled ? join(config.dev.dataDir, "state.db") : DEFAULT_SQLITE_PATH);
    return createSqliteStore({ path, logger });
  }
  const read = (key: string, p: string | undefined) => {
    if (p === undefined) return undefined;
    if (!existsSync(p)) throw new ConfigError(`store.tls.${key}: file not found: ${p}`);
    return readFileSync(p, "utf8");
  };
  const caPem = read("ca", s.tls.ca);
  const certPem = read("cert", s.tls.cert);
  const keyPem = read("key", s.tls.key);
  if ((certPem === undefined) !== (keyPem === undefined))
    throw new ConfigError("store.tls: cert and key go together");
  if (certPem !== undefined && caPem === undefined)
    throw new ConfigError("store.tls.ca: required with a client certificate");
  logger.info(
    { endpoints: s.endpoints, prefix: s.prefix, tls: caPem !== undefined },
    "state store: etcd",
  );
  return createEtcdStore({
    endpoints: s.endpoints,
    prefix: s.prefix,
    dialTimeoutMs: s.dialTimeoutMs,
    tls: caPem === undefined ? undefined : { caPem, certPem, keyPem },
  });
}
