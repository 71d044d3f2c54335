import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type CertifiedKey,
  createCertificateAuthority,
  loadCertificateAuthority,
} from "../../src/pki/index.js";

/** Certificates for a test: a cluster CA with server and client certificates, and a foreign CA. */
export interface TestPki {
  readonly dir: string;
  readonly ca: CertifiedKey;
  readonly server: CertifiedKey;
  /** Client "admin", issued by the cluster CA. */
  readonly client: CertifiedKey;
  /** Client "admin", issued by another CA: must never be accepted. */
  readonly foreignClient: CertifiedKey;
  readonly foreignCa: CertifiedKey;
  /** Paths of the cluster CA cert, server cert and key. */
  readonly paths: { readonly ca: string; readonly cert: string; readonly key: string };
}

/** Creates a fresh PKI in a temporary directory. */
export async function createTestPki(): Promise<TestPki> {
  const dir = mkdtempSync(join(tmpdir(), "dv-pki-"));
  const ca = await createCertificateAuthority({ commonName: "Test Cluster CA" });
  const issuer = await loadCertificateAuthority(ca);
  const server = await issuer.issue({
    commonName: "localhost",
    usage: "server",
    altNames: ["localhost", "127.0.0.1"],
  });
  const client = await issuer.issue({ commonName: "admin", usage: "client" });
  const foreignCa = await createCertificateAuthority({ commonName: "Test Cluster CA" });
  const foreignClient = await (await loadCertificateAuthority(foreignCa)).issue({
    commonName: "admin",
    usage: "client",
  });
  const paths = {
    ca: join(dir, "ca.crt"),
    cert: join(dir, "server.crt"),
    key: join(dir, "server.key"),
  };
  writeFileSync(paths.ca, ca.certPem);
  writeFileSync(paths.cert, server.certPem);
  writeFileSync(paths.key, server.keyPem, { mode: 0o600 });
  return { dir, ca, server, client, foreignClient, foreignCa, paths };
}
