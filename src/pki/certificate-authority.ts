import "reflect-metadata";
import { randomBytes, webcrypto } from "node:crypto";
import { isIP } from "node:net";
import * as x509 from "@peculiar/x509";
import { importSpki } from "./certificate-request.js";
import {
  generateKeyPair,
  type KeyAlgorithm,
  privateKeyFromPem,
  privateKeyToPem,
  signingParams,
} from "./key-algorithm.js";

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const DAY_MS = 86_400_000;
/** Certificates are back-dated this much to tolerate clock skew between nodes. */
const BACKDATE_MS = 5 * 60_000;

/** A certificate and its private key, both PEM. */
export interface CertifiedKey {
  readonly certPem: string;
  readonly keyPem: string;
}

/** Options of {@link createCertificateAuthority}. */
export interface CaOptions {
  readonly commonName: string;
  /** Default 3650 days. */
  readonly validityDays?: number;
  /** Default ecdsa-p256. */
  readonly algorithm?: KeyAlgorithm;
  /** Defaults to the wall clock. */
  readonly now?: Date;
}

/** What a leaf certificate is for. */
export type CertificateUsage = "server" | "client";

/** Options of {@link CertificateAuthority.issue}. */
export interface IssueOptions {
  readonly commonName: string;
  readonly usage: CertificateUsage;
  /** DNS names and IP addresses for the subjectAltName (server certificates need them). */
  readonly altNames?: readonly string[];
  /** Default 30 days. */
  readonly validityDays?: number;
  /** Default ecdsa-p256. */
  readonly algorithm?: KeyAlgorithm;
  readonly now?: Date;
  /** Certify this public key (SPKI DER, from a checked CSR) instead of generating a key pair. */
  readonly spkiDer?: Buffer;
}

/** A CA that can issue leaf certificates. */
export interface CertificateAuthority {
  /** The CA certificate, PEM. */
  readonly certPem: string;
  /**
   * Issues a certificate for a freshly generated key pair, or for
   * `spkiDer` when given (then `keyPem` is empty: the key stays with its owner).
   */
  issue(options: IssueOptions): Promise<CertifiedKey>;
}

/** Creates a self-signed root CA (CA:TRUE, pathlen 0, keyCertSign and cRLSign). */
export async function createCertificateAuthority(options: CaOptions): Promise<CertifiedKey> {
  const alg = options.algorithm ?? "ecdsa-p256";
  const keys = await generateKeyPair(alg);
  const now = options.now ?? new Date();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: [{ CN: [options.commonName] }],
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + (options.validityDays ?? 3650) * DAY_MS),
    signingAlgorithm: signingParams(alg),
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString("pem"), keyPem: await privateKeyToPem(keys.privateKey) };
}

/** Loads a CA from its PEM certificate and key for issuing. */
export async function loadCertificateAuthority(ca: CertifiedKey): Promise<CertificateAuthority> {
  const caCert = new x509.X509Certificate(ca.certPem);
  const { key: caKey, alg: caAlg } = await privateKeyFromPem(ca.keyPem);
  const authorityKeyId = await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey);
  return {
    certPem: ca.certPem,
    async issue(options) {
      const alg = options.algorithm ?? "ecdsa-p256";
      const keys =
        options.spkiDer === undefined
          ? await generateKeyPair(alg)
          : { publicKey: await importSpki(options.spkiDer), privateKey: undefined };
      const now = options.now ?? new Date();
      const altNames = (options.altNames ?? []).map((n) => ({
        type: (isIP(n) ? "ip" : "dns") as "ip" | "dns",
        value: n,
      }));
      const extensions: x509.Extension[] = [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(
          x509.KeyUsageFlags.digitalSignature |
            (alg.startsWith("rsa") ? x509.KeyUsageFlags.keyEncipherment : 0),
          true,
        ),
        new x509.ExtendedKeyUsageExtension(
          [
            options.usage === "server"
              ? x509.ExtendedKeyUsage.serverAuth
              : x509.ExtendedKeyUsage.clientAuth,
          ],
          false,
        ),
        authorityKeyId,
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ];
      if (altNames.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(altNames));
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: randomSerial(),
        subject: [{ CN: [options.commonName] }],
        issuer: caCert.subject,
        notBefore: new Date(now.getTime() - BACKDATE_MS),
        notAfter: new Date(now.getTime() + (options.validityDays ?? 30) * DAY_MS),
        signingAlgorithm: signingParams(caAlg),
        publicKey: keys.publicKey,
        signingKey: caKey,
        extensions,
      });
      return {
        certPem: cert.toString("pem"),
        keyPem: keys.privateKey === undefined ? "" : await privateKeyToPem(keys.privateKey),
      };
    },
  };
}

/** A positive 128-bit serial (top bit cleared so DER needs no sign byte games). */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] as number) & 0x7f) | 0x01;
  return bytes.toString("hex");
}
