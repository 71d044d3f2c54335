import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { type CertificateAuthority, loadCertificateAuthority } from "../pki/index.js";
import { ConfigError } from "./config-loader.js";
import type { Config } from "./config-schema.js";
import type { DevEnvironment } from "./dev-environment.js";

/**
 * The CA this server issues node certificates with: pki.caCert and
 * pki.caKey, or dev mode's own. Undefined when no CA key is configured.
 */
export async function loadClusterCa(
  config: Config,
  dev: DevEnvironment | undefined,
): Promise<CertificateAuthority | undefined> {
  const certPath = config.pki.caCert ?? dev?.caCert;
  const keyPath =
    config.pki.caKey ?? (dev === undefined ? undefined : join(dev.dataDir, "pki", "ca.key"));
  if (certPath === undefined || keyPath === undefined) return undefined;
  for (const [key, p] of [
    ["caCert", certPath],
    ["caKey", keyPath],
  ] as const) {
    if (!existsSync(p)) throw new ConfigError(`pki.${key}: file not found: ${p}`);
  }
  try {
    return await loadCertificateAuthority({
      certPem: readFileSync(certPath, "utf8"),
      keyPem: readFileSync(keyPath, "utf8"),
    });
  } catch (err) {
    throw new ConfigError(`pki: the CA certificate or key is unusable: ${(err as Error).message}`);
  }
}
