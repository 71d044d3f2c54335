// The one path by which the EnrollmentService has the cluster CA sign a
// certificate: the CSR checked, the certificate issued and recorded in the
// ledger (as a renewal when it is one).
import { X509Certificate } from "node:crypto";
import { type Clock, RpcError } from "../core/index.js";
import { acceptCsr, type CertificateAuthority, CsrError } from "../pki/index.js";
import { ts } from "./certificate-info.js";
import type { CertificateLedger } from "./certificate-ledger.js";

/** What an issued certificate says, when not a default client certificate. */
export interface IssueHow {
  readonly usage: "client" | "server";
  readonly sans: readonly string[];
  readonly days: number;
}

/** Issues and records certificates with the cluster CA. */
export interface CertificateIssuer {
  /** The cluster CA; CA_UNAVAILABLE when this server holds no CA key. */
  requireCa(): CertificateAuthority;
  /**
   * Issues a certificate for `name` (a client certificate for the default
   * term unless told otherwise) and records it: as the one renewal of
   * `renewing` when given.
   */
  issue(
    name: string,
    csrPem: string,
    issuedBy: string,
    signal: AbortSignal,
    how?: IssueHow,
    renewing?: { serial: string; subject: string; issuer: string },
  ): Promise<{
    certificatePem: string;
    chainPem: string;
    caPem: string;
    serial: string;
    notAfter: ReturnType<typeof ts>;
  }>;
}

/** What the issuer needs: the CA (undefined without a CA key), the clock, the ledger, the default term in days. */
export interface CertificateIssuerDeps {
  readonly ca: CertificateAuthority | undefined;
  readonly clock: Clock;
  readonly ledger: CertificateLedger;
  readonly days: number;
}

/** Builds the issuer the enrollment, renewal and issuing handlers share. */
export function createCertificateIssuer(deps: CertificateIssuerDeps): CertificateIssuer {
  const { clock, ledger, days } = deps;
  const requireCa = (): CertificateAuthority => {
    if (deps.ca === undefined) throw new RpcError("CA_UNAVAILABLE");
    return deps.ca;
  };

  async function issue(
    name: string,
    csrPem: string,
    issuedBy: string,
    signal: AbortSignal,
    how: IssueHow = {
      usage: "client",
      sans: [],
      days,
    },
    renewing?: { serial: string; subject: string; issuer: string },
  ) {
    const ca = requireCa();
    let accepted: Awaited<ReturnType<typeof acceptCsr>>;
    try {
      accepted = await acceptCsr(csrPem);
    } catch (err) {
      if (err instanceof CsrError)
        throw new RpcError("INVALID_ARGUMENT", { message: `csr_pem: ${err.message}` });
      throw err;
    }
    const { certPem } = await ca.issue({
      commonName: name,
      usage: how.usage,
      altNames: how.sans,
      validityDays: how.days,
      spkiDer: accepted.spkiDer,
      now: new Date(clock.now()),
    });
    const x = new X509Certificate(certPem);
    const kind = { issuedBy, kind: how.usage };
    const record =
      renewing === undefined
        ? await ledger.record(certPem, kind, signal)
        : await ledger.renew(renewing, certPem, kind, signal);
    return {
      certificatePem: certPem,
      chainPem: ca.certPem,
      caPem: ca.certPem,
      serial: x.serialNumber,
      notAfter: ts(record.notAfterMs),
    };
  }

  return { requireCa, issue };
}
