import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import type { OpenedResources } from "../core/index.js";
import { type Clock, type Logger, runAfter, runAt, serialKey } from "../core/index.js";
import type { CertificateAuthority } from "../pki/index.js";
import type { CertificateLedger, Revocations } from "../security/index.js";
import type { Config } from "./config-schema.js";
import type { DevEnvironment } from "./dev-environment.js";
import { issuedBy, renewalTime, renewServerCertificate, watchFiles } from "./server-certificate.js";
import {
  DEFAULT_TLS_PATHS,
  readTlsMaterial,
  type TlsMaterial,
  type TlsPaths,
} from "./tls-material.js";

/** The daemon's TLS files: where they are, reading them, and when certificates expire. */
export interface TlsFiles {
  /** The configured paths, else dev mode's, else the defaults. */
  paths(config: Config): TlsPaths;
  /** Reads and checks the TLS files, noting their expiry. */
  load(config: Config): TlsMaterial;
  /** Notes a certificate's expiry (warns under 30 days left); unreadable ones are ignored. */
  noteExpiry(name: string, pem: string): void;
  /** Expiry (ms since the epoch) by certificate name, for /metrics. */
  readonly expiries: Readonly<Record<string, number>>;
  /** The serial ({@link serialKey}) of the server certificate last loaded; undefined before. */
  servingSerial(): string | undefined;
  /** Called after a load changed the serving serial; returns the function that stops it. */
  onServingChange(listener: () => void): () => void;
}

/** The TLS files of a daemon with `dev`'s files as fallbacks. */
export function createTlsFiles(
  dev: DevEnvironment | undefined,
  clock: Clock,
  logger: Logger,
): TlsFiles {
  const paths = (c: Config): TlsPaths => ({
    cert: c.tls.cert ?? dev?.serverCert ?? DEFAULT_TLS_PATHS.cert,
    key: c.tls.key ?? dev?.serverKey ?? DEFAULT_TLS_PATHS.key,
    clientCa: c.tls.clientCa ?? dev?.caCert ?? DEFAULT_TLS_PATHS.clientCa,
  });
  const expiries: Record<string, number> = {};
  const noteExpiry = (name: string, pem: string) => {
    try {
      const at = Date.parse(new X509Certificate(pem).validTo);
      expiries[name] = at;
      const daysLeft = (at - clock.now()) / 86_400_000;
      if (daysLeft < 30)
        logger.warn(
          { certificate: name, daysLeft: Math.floor(daysLeft) },
          "certificate expires within 30 days",
        );
    } catch {
      // unreadable certificates are refused where they are loaded
    }
  };
  let serving: string | undefined;
  const servingListeners = new Set<() => void>();
  return {
    paths,
    noteExpiry,
    expiries,
    servingSerial: () => serving,
    onServingChange(listener) {
      servingListeners.add(listener);
      return () => servingListeners.delete(listener);
    },
    load(c) {
      const material = readTlsMaterial(paths(c), clock.now());
      const before = serving;
      serving = serialOf(material.certPem);
      if (serving !== before) for (const l of [...servingListeners]) l();
      noteExpiry("server", material.certPem);
      noteExpiry("client-ca", material.clientCaPem);
      return material;
    },
  };
}

/** The serial of a certificate's PEM (its first, in a chain); undefined if unreadable. */
function serialOf(pem: string): string | undefined {
  try {
    return serialKey(new X509Certificate(pem).serialNumber);
  } catch {
    return undefined;
  }
}

/** The first wait after a failed renewal of the server's certificate; it doubles per failure. */
const RETRY_MIN_MS = 60_000;
/** The longest wait between tries of a failing renewal. */
const RETRY_MAX_MS = 3_600_000;

/** What {@link keepTlsFresh} needs. */
export interface TlsFreshness {
  readonly files: TlsFiles;
  /** The configuration in force (it changes on reload). */
  readonly config: () => Config;
  readonly ca: CertificateAuthority | undefined;
  readonly ledger: CertificateLedger;
  /**
   * This daemon's copy of the revocations: a certificate of its own that is
   * revoked is renewed at once (agents refuse a revoked one).
   */
  readonly revocations?: Pick<Revocations, "isRevoked" | "onChange">;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Puts freshly read TLS material in force for new handshakes. */
  readonly apply: (material: TlsMaterial) => void;
  readonly resources: OpenedResources;
}

/**
 * New handshakes use replaced TLS files without a restart (SIGHUP does the
 * same), and the server renews its own certificate from the local CA two
 * thirds into its life, or at once when it is revoked (an operator's answer
 * to a stolen key: agents refuse the revoked one from their next
 * connection). Returns the reload, for SIGHUP's callers.
 */
export function keepTlsFresh(options: TlsFreshness): (why: string) => void {
  const { files, ca, ledger, clock, logger, resources } = options;
  const reloadTlsFromFiles = (why: string) => {
    try {
      options.apply(files.load(options.config()));
      logger.info({ why }, "TLS files reloaded");
    } catch (err) {
      logger.error({ err, why }, "TLS files not reloaded; the running ones are kept");
      return;
    }
    // A revoked certificate put in (a backup restored) is renewed at once too, not when the
    // renewal planned for the one it replaced comes due.
    onRevocation();
  };
  const paths = files.paths(options.config());
  const unwatch = watchFiles(
    [paths.cert, paths.key, paths.clientCa].filter((p): p is string => p !== undefined),
    () => reloadTlsFromFiles("files changed"),
    logger,
  );
  resources.push("TLS file watch", unwatch);
  let cancelRenewal = () => {};
  /** A renewal is writing the files now. */
  let renewing = false;
  resources.push("server certificate renewal", () => cancelRenewal());
  /** Failed renewals in a row: the next try waits RETRY_MIN_MS doubled that often, up to RETRY_MAX_MS. */
  let failures = 0;
  const retryIn = () => Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** (failures - 1));
  const failed = (err: unknown) => {
    failures++;
    logger.error({ err, failures }, "server certificate renewal failed; it is tried again");
  };
  // A wait past the longest timer (24.8 days) is reached in steps, not renewed early.
  const later = (run: () => void, ms: number) => {
    cancelRenewal = runAfter(Math.max(1000, ms), run);
  };
  // The renewal time is one by the clock, looked at again at each step: a daemon that started
  // with its clock behind, set right since, renews by the right time (by timers, it waited on).
  const at = (run: () => void, atMs: number) => {
    const left = atMs - clock.now();
    if (left <= 1000) later(run, left);
    else cancelRenewal = runAt(atMs, () => clock.now(), run);
  };
  /**
   * Plans the renewal of the certificate the files hold (`retrying`: at once,
   * its wait is over). Never throws: it runs in the renewal's own callbacks,
   * where a throw (a file being replaced as it is read) was an unhandled
   * rejection, which ends the daemon, and renewal stopped.
   */
  const scheduleRenewal = (retrying = false) => {
    // The files of the configuration in force (a reload may have moved them).
    const { cert, key } = files.paths(options.config());
    if (ca === undefined || cert === undefined || key === undefined) return;
    let pem: string;
    let due: number | undefined;
    let revoked: boolean;
    try {
      pem = readFileSync(cert, "utf8");
      if (!issuedBy(pem, ca)) return;
      revoked = isRevoked(pem);
      due = failures === 0 && !revoked ? renewalTime(pem) : undefined;
    } catch (err) {
      failed(err);
      later(() => scheduleRenewal(true), retryIn());
      return;
    }
    const renew = () =>
      Promise.resolve()
        .then(() => {
          renewing = true;
          // Replaced since (by an operator, or renewed by another daemon sharing the
          // files, or moved by a reload): that certificate renews in its own time; a
          // renewal of the one it replaced would overwrite it.
          const now = files.paths(options.config());
          if (now.cert !== cert || now.key !== key || readFileSync(cert, "utf8") !== pem) {
            failures = 0;
            return undefined;
          }
          return renewServerCertificate(ca, ledger, pem, { cert, key }, clock);
        })
        .then(
          (fresh) => {
            renewing = false;
            if (fresh !== undefined) {
              failures = 0;
              // Renewed: that serial, put back in the files later, is renewed again.
              renewingRevoked = undefined;
              logger.info(
                { serial: fresh.serialNumber, notAfter: fresh.validTo },
                "server certificate renewed from the local CA",
              );
              reloadTlsFromFiles("renewed");
            }
            scheduleRenewal();
          },
          (err: unknown) => {
            renewing = false;
            failed(err);
            scheduleRenewal();
          },
        );
    if (due !== undefined) at(renew, due);
    else if (revoked && failures === 0) {
      // Not a second later: agents told of the revocation reconnect now, and refuse it.
      logger.warn(
        { serial: new X509Certificate(pem).serialNumber },
        "this server's certificate is revoked; renewing it now",
      );
      cancelRenewal = runAfter(0, renew);
    } else later(renew, retrying ? 0 : retryIn());
  };
  const isRevoked = (pem: string) =>
    options.revocations?.isRevoked(new X509Certificate(pem).serialNumber) === true;
  /** The serial whose revocation a renewal is planned for (once per serial). */
  let renewingRevoked: string | undefined;
  const onRevocation = () => {
    const { cert } = files.paths(options.config());
    // A renewal running now replaces the certificate anyway.
    if (ca === undefined || cert === undefined || renewing) return;
    try {
      const pem = readFileSync(cert, "utf8");
      const serial = new X509Certificate(pem).serialNumber;
      if (serial === renewingRevoked || !issuedBy(pem, ca) || !isRevoked(pem)) return;
      renewingRevoked = serial;
    } catch {
      return; // unreadable now: the planned renewal reads it again, and says so
    }
    cancelRenewal();
    failures = 0;
    scheduleRenewal();
  };
  if (options.revocations !== undefined)
    resources.push("own revocation watch", options.revocations.onChange(onRevocation));
  scheduleRenewal();
  return reloadTlsFromFiles;
}
