import { X509Certificate } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import { finishFileSet } from "../client/index.js";
import { ConfigError } from "./config-loader.js";

/** PEM text of the server's TLS identity and the CA its clients' certificates chain to. */
export interface TlsMaterial {
  readonly certPem: string;
  readonly keyPem: string;
  readonly clientCaPem: string;
  /** When the server certificate expires, epoch milliseconds (optional for callers that build material by hand). */
  readonly notAfter?: number;
}

/** Paths of the TLS files, as configured. */
export interface TlsPaths {
  readonly cert?: string | undefined;
  readonly key?: string | undefined;
  readonly clientCa?: string | undefined;
}

/** Where deployed DebVisor nodes keep their TLS files (the original design's defaults). */
export const DEFAULT_TLS_PATHS = {
  cert: "/etc/debvisor/rpc/cert.pem",
  key: "/etc/debvisor/rpc/key.pem",
  clientCa: "/etc/debvisor/rpc/ca.pem",
} as const;

/**
 * Reads and checks the TLS files: present, readable, the certificate within
 * its validity period, and the key matching it. Errors name the
 * configuration key and the path.
 */
export function readTlsMaterial(paths: TlsPaths, now: number = Date.now()): TlsMaterial {
  const read = (key: string, path: string | undefined) => {
    if (path === undefined) throw new ConfigError(`tls.${key}: required (or start with --dev)`);
    if (!existsSync(path))
      throw new ConfigError(
        `tls.${key}: file not found: ${path} (configure tls.${key}, or start with --dev)`,
      );
    try {
      return readFileSync(path, "utf8");
    } catch (err) {
      throw new ConfigError(`tls.${key}: cannot read ${path}: ${(err as Error).message}`);
    }
  };
  // A renewal of this server's key and certificate interrupted while it moved them in.
  try {
    if (paths.key !== undefined) finishFileSet(paths.key);
  } catch (err) {
    throw new ConfigError(
      `tls.key: a renewal of ${paths.key} and its certificate stopped half-way and cannot be completed: ${(err as Error).message}`,
    );
  }
  const material = {
    certPem: read("cert", paths.cert),
    keyPem: read("key", paths.key),
    clientCaPem: read("clientCa", paths.clientCa),
  };
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(material.certPem);
  } catch (err) {
    throw new ConfigError(
      `tls.cert: not a PEM certificate: ${paths.cert}: ${(err as Error).message}`,
    );
  }
  if (Date.parse(leaf.validTo) <= now) {
    throw new ConfigError(
      `tls.cert: certificate expired on ${new Date(leaf.validTo).toISOString()}: ${paths.cert}`,
    );
  }
  if (Date.parse(leaf.validFrom) > now) {
    throw new ConfigError(
      `tls.cert: certificate not valid before ${new Date(leaf.validFrom).toISOString()}: ${paths.cert}`,
    );
  }
  try {
    createSecureContext({ cert: material.certPem, key: material.keyPem, ca: material.clientCaPem });
  } catch (err) {
    throw new ConfigError(`tls: certificate, key or client CA unusable: ${(err as Error).message}`);
  }
  return { ...material, notAfter: Date.parse(leaf.validTo) };
}
