import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { type AuditLog, openAuditLog } from "../audit/index.js";
import type { Logger } from "../core/index.js";
import { ConfigError } from "./config-loader.js";
import type { Config } from "./config-schema.js";

/** The original design's audit file. */
export const DEFAULT_AUDIT_PATH = "/var/log/debvisor/rpc-audit.log";

/** Opens the configured audit trail (dev mode: DATA_DIR/audit.log), refusing a short HMAC key. */
export async function openAudit(
  config: Config,
  devDataDir: string | undefined,
  logger: Logger,
  onSync?: (durationMs: number) => void,
): Promise<AuditLog> {
  const path =
    config.audit.path ??
    (devDataDir === undefined ? DEFAULT_AUDIT_PATH : join(devDataDir, "audit.log"));
  let hmacKey: Buffer | undefined;
  if (config.audit.hmacKeyFile !== undefined) {
    if (!existsSync(config.audit.hmacKeyFile))
      throw new ConfigError(`audit.hmacKeyFile: file not found: ${config.audit.hmacKeyFile}`);
    hmacKey = readFileSync(config.audit.hmacKeyFile);
    if (hmacKey.length < 32)
      throw new ConfigError("audit.hmacKeyFile: the key must be at least 32 bytes");
  }
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const copyPath = config.audit.forward.copyPath;
  if (copyPath !== undefined) mkdirSync(dirname(copyPath), { recursive: true, mode: 0o700 });
  const log = await openAuditLog({
    path,
    hmacKey,
    maxBytes: config.audit.maxBytes,
    maxAgeMs: config.audit.maxAgeMs,
    copyPath,
    forwardToSyslog: config.audit.forward.syslog,
    logger,
    onSync,
  });
  logger.info({ path, keyed: hmacKey !== undefined }, "audit trail open");
  return log;
}
