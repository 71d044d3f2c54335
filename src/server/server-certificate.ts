import { X509Certificate } from "node:crypto";
import { watch } from "node:fs";
import { basename, dirname } from "node:path";
import { writeFileSet } from "../client/index.js";
import { type Clock, type Logger, RpcError } from "../core/index.js";
import type { CertificateAuthority } from "../pki/index.js";
import type { CertificateLedger } from "../security/index.js";

const DAY_MS = 86_400_000;

/** When a certificate should be renewed: two thirds into its life, plus up to 5% jitter so a fleet does not renew at once. */
export function renewalTime(certPem: string, random: () => number = Math.random): number {
  const c = new X509Certificate(certPem);
  const from = Date.parse(c.validFrom);
  const life = Date.parse(c.validTo) - from;
  return from + (life * 2) / 3 + random() * life * 0.05;
}

/** The DNS names and IP addresses a certificate names, to reissue it alike. */
export function altNamesOf(certPem: string): string[] {
  const san = new X509Certificate(certPem).subjectAltName ?? "";
  return san
    .split(", ")
    .map((part) => part.replace(/^DNS:/, "").replace(/^IP Address:/, ""))
    .filter((n) => n !== "");
}

/**
 * Issues a fresh server certificate from the local CA for the same names,
 * records it in the ledger, and only then writes it (with the CA, as the
 * chain) and its new key over the configured files, as one set. The caller
 * reloads TLS from the files. A renewal the ledger cannot record rejects
 * with nothing written: a certificate the ledger does not list could not
 * be found or revoked by an operator.
 */
export async function renewServerCertificate(
  ca: CertificateAuthority,
  ledger: CertificateLedger,
  currentPem: string,
  paths: { cert: string; key: string },
  clock: Clock,
): Promise<X509Certificate> {
  const current = new X509Certificate(currentPem);
  const cn = /CN=([^\n,]+)/.exec(current.subject)?.[1] ?? "localhost";
  const lifeDays = Math.max(
    1,
    Math.round((Date.parse(current.validTo) - Date.parse(current.validFrom)) / DAY_MS),
  );
  const fresh = await ca.issue({
    commonName: cn,
    usage: "server",
    altNames: altNamesOf(currentPem),
    validityDays: lifeDays,
    now: new Date(clock.now()),
  });
  const how = { issuedBy: "server-renewal", kind: "server" } as const;
  try {
    await ledger.renew(
      { serial: current.serialNumber, subject: cn, issuer: current.issuer },
      fresh.certPem,
      how,
    );
  } catch (err) {
    // The current one was revoked (or renewed elsewhere from the same files): this server
    // holds the CA key and still needs a certificate, so the new one is recorded on its own,
    // outside the revoked one's chain.
    if (!(err instanceof RpcError) || err.reason !== "CERT_ALREADY_RENEWED") throw err;
    await ledger.record(fresh.certPem, how);
  }
  // Key and certificate as one set: a crash between them left a key the certificate does not
  // match, and the daemon would not start (readTlsMaterial completes an interrupted set).
  await writeFileSet([
    { path: paths.key, text: fresh.keyPem, mode: 0o600 },
    { path: paths.cert, text: `${fresh.certPem.trimEnd()}\n${ca.certPem}`, mode: 0o644 },
  ]);
  return new X509Certificate(fresh.certPem);
}

/** Whether `certPem` was signed by `ca` (only then can this server renew it itself). */
export function issuedBy(certPem: string, ca: CertificateAuthority): boolean {
  try {
    return new X509Certificate(certPem).checkIssued(new X509Certificate(ca.certPem));
  } catch {
    return false;
  }
}

/**
 * Calls `onChange` (debounced) when any of the files is replaced or
 * written. Watches their directories, because editors and renewal tools
 * replace files rather than write them in place.
 */
export function watchFiles(
  paths: readonly string[],
  onChange: () => void,
  logger: Logger,
): () => void {
  let timer: NodeJS.Timeout | undefined;
  const names = new Map<string, Set<string>>();
  for (const p of paths) {
    const d = dirname(p);
    if (!names.has(d)) names.set(d, new Set());
    names.get(d)?.add(basename(p));
  }
  const watchers = [...names.entries()].map(([d, files]) => {
    const w = watch(d, (_event, file) => {
      if (file !== null && !files.has(String(file))) return;
      if (timer !== undefined) clearTimeout(timer);
      timer = setTimeout(onChange, 500);
      timer.unref();
    });
    w.on("error", (err) =>
      logger.warn({ err, dir: d }, "cannot watch TLS files; SIGHUP still reloads them"),
    );
    w.unref();
    return w;
  });
  return () => {
    if (timer !== undefined) clearTimeout(timer);
    for (const w of watchers) w.close();
  };
}
