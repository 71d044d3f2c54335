import { existsSync, readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import { ConfigError } from "./config-loader.js";

/** PEM text of the server's TLS identity and the CA its clients' certificates chain to. */
export interface TlsMaterial {
  readonly certPem: string;
  readonly keyPem: string;
  readonly clientCaPem: string;
}

/** Paths of the TLS files, as configured. */
export interface TlsPaths {
  readonly cert?: string | undefined;
  readonly key?: string | undefined;
  readonly clientCa?: string | undefined;
}

/**
 * Reads and checks the TLS files: present, readable, and the key matching the
 * certificate. Errors name the configuration key and the path.
 */
export function readTlsMaterial(paths: TlsPaths): TlsMaterial {
  const read = (key: string, path: string | undefined) => {
    if (path === undefined) throw new ConfigError(`tls.${key}: required (or start with --dev)`);
    if (!existsSync(path)) throw new ConfigError(`tls.${key}: file not found: ${path}`);
    try {
      return readFileSync(path, "utf8");
    } catch (err) {
      throw new ConfigError(`tls.${key}: cannot read ${path}: ${(err as Error).message}`);
    }
  };
  const material = {
    certPem: read("cert", paths.cert),
    keyPem: read("key", paths.key),
    clientCaPem: read("clientCa", paths.clientCa),
  };
  try {
    createSecureContext({ cert: material.certPem, key: material.keyPem, ca: material.clientCaPem });
  } catch (err) {
    throw new ConfigError(`tls: certificate, key or client CA unusable: ${(err as Error).message}`);
  }
  return material;
}
