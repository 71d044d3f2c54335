import { X509Certificate } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { type ContextEntry, readContextFile, writeContextFile } from "../client/index.js";
import type { Logger } from "../core/index.js";
import { createCertificateAuthority, loadCertificateAuthority } from "../pki/index.js";
import type { ApiKeys } from "../security/index.js";

/** Files dev mode creates under its data directory. */
export interface DevEnvironment {
  readonly dataDir: string;
  readonly caCert: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly adminCert: string;
  readonly adminKey: string;
  readonly contextFile: string;
}

/** Certificates are re-issued when they would expire within this long. */
const RENEW_BEFORE_MS = 7 * 86_400_000;

/**
 * Creates (first start) or reuses (later starts) the development CA, a server
 * certificate for localhost/127.0.0.1/::1 and an admin client certificate.
 * Keys are written 0600 in a 0700 directory; writes are atomic.
 */
export async function prepareDevEnvironment(
  dataDirInput: string,
  logger: Logger,
): Promise<DevEnvironment> {
  const dataDir = resolve(dataDirInput);
  const pki = join(dataDir, "pki");
  mkdirSync(pki, { recursive: true, mode: 0o700 });
  const env: DevEnvironment = {
    dataDir,
    caCert: join(pki, "ca.crt"),
    serverCert: join(pki, "server.crt"),
    serverKey: join(pki, "server.key"),
    adminCert: join(pki, "admin.crt"),
    adminKey: join(pki, "admin.key"),
    contextFile: join(dataDir, "hvctl.yaml"),
  };
  const caKey = join(pki, "ca.key");
  let created = false;
  if (!existsSync(env.caCert) || !existsSync(caKey)) {
    const ca = await createCertificateAuthority({
      commonName: "DebVisor Development CA",
      validityDays: 3650,
    });
    writeSecret(caKey, ca.keyPem);
    writePublic(env.caCert, ca.certPem);
    created = true;
  }
  const ca = await loadCertificateAuthority({
    certPem: readFileSync(env.caCert, "utf8"),
    keyPem: readFileSync(caKey, "utf8"),
  });
  if (created || needsIssue(env.serverCert, env.serverKey)) {
    const leaf = await ca.issue({
      commonName: "localhost",
      usage: "server",
      altNames: ["localhost", "127.0.0.1", "::1"],
      validityDays: 90,
    });
    writeSecret(env.serverKey, leaf.keyPem);
    writePublic(env.serverCert, leaf.certPem);
    created = true;
  }
  if (created || needsIssue(env.adminCert, env.adminKey)) {
    const leaf = await ca.issue({ commonName: "admin", usage: "client", validityDays: 365 });
    writeSecret(env.adminKey, leaf.keyPem);
    writePublic(env.adminCert, leaf.certPem);
    created = true;
  }
  // The server presents its CA too, so a new node can pin it by fingerprint on first contact.
  const caPem = readFileSync(env.caCert, "utf8");
  const served = readFileSync(env.serverCert, "utf8");
  if (!served.includes(caPem.trim())) writePublic(env.serverCert, `${served.trimEnd()}\n${caPem}`);
  logger.info(
    { dataDir, created },
    created ? "dev mode: created CA and certificates" : "dev mode: reusing CA and certificates",
  );
  return env;
}

/**
 * The dev cluster's operator API key: reused from DATA_DIR/pki/operator.apikey
 * while it still verifies, else issued anew (principal dev-operator, role
 * operator) and written there 0600. Returns the token file's path.
 */
export async function ensureDevOperatorKey(
  env: DevEnvironment,
  apiKeys: ApiKeys,
  logger: Logger,
): Promise<string> {
  const file = join(env.dataDir, "pki", "operator.apikey");
  if (existsSync(file)) {
    const r = await apiKeys.verify(readFileSync(file, "utf8").trim());
    if ("record" in r) return file;
  }
  const issued = await apiKeys.create({
    principal: "dev-operator",
    roles: ["operator"],
    createdBy: "dev-mode",
    description: "dev mode operator key",
  });
  writeSecret(file, `${issued.token}\n`);
  logger.info({ keyId: issued.record.id }, "dev mode: issued the operator API key");
  return file;
}

/** Writes the hvctl context file pointing at the address actually bound: admin by mTLS, operator by API key. */
export function writeDevContext(
  env: DevEnvironment,
  server: string,
  operatorKeyFile: string,
  logger?: Logger,
): void {
  const rel = (p: string) => relative(env.dataDir, p);
  const ours: ContextEntry[] = [
    {
      name: "dev",
      server,
      // The server certificate names localhost; verifying against the name
      // keeps Node from warning about an IP address used as TLS SNI.
      tlsServerName: "localhost",
      ca: rel(env.caCert),
      credential: { clientCert: rel(env.adminCert), clientKey: rel(env.adminKey) },
    },
    {
      name: "dev-operator",
      server,
      tlsServerName: "localhost",
      ca: rel(env.caCert),
      credential: { apiKeyFile: rel(operatorKeyFile) },
    },
  ];
  // Contexts a user added (hvctl config set-context) and their current
  // context survive restarts; only dev and dev-operator are rewritten.
  let theirs: ContextEntry[] = [];
  let current = "dev";
  let revokedServersFile: string | undefined;
  if (existsSync(env.contextFile)) {
    try {
      const before = readContextFile(env.contextFile);
      theirs = before.contexts.filter((c) => !ours.some((o) => o.name === c.name));
      if (before.currentContext !== undefined && before.currentContext !== "")
        current = before.currentContext;
      revokedServersFile = before.revokedServersFile;
    } catch (err) {
      // Kept aside, not lost: the user's contexts may be in it.
      const aside = `${env.contextFile}.unreadable`;
      renameSync(env.contextFile, aside);
      logger?.warn({ err, movedTo: aside }, "dev mode: hvctl.yaml unreadable; writing a fresh one");
    }
  }
  const contexts = [...ours, ...theirs];
  writeContextFile(env.contextFile, {
    apiVersion: "debvisor.io/v1",
    kind: "HvctlConfig",
    currentContext: contexts.some((c) => c.name === current) ? current : "dev",
    contexts,
    ...(revokedServersFile === undefined ? {} : { revokedServersFile }),
  });
}

function needsIssue(certPath: string, keyPath: string): boolean {
  if (!existsSync(certPath) || !existsSync(keyPath)) return true;
  try {
    const cert = new X509Certificate(readFileSync(certPath));
    return Date.parse(cert.validTo) - Date.now() < RENEW_BEFORE_MS;
  } catch {
    return true;
  }
}

function writeSecret(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

function writePublic(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode: 0o644 });
  renameSync(tmp, path);
}
