import "reflect-metadata";
import { createPublicKey, webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";
import {
  generateKeyPair,
  type KeyAlgorithm,
  privateKeyToPem,
  signingParams,
} from "./key-algorithm.js";

/** A checked CSR: the public key to certify, in SPKI DER. Nothing else of the CSR is used. */
export interface AcceptedCsr {
  readonly spkiDer: Buffer;
  /** `ecdsa-p256`, `ecdsa-p384` or `rsa-<bits>`, for logs. */
  readonly keyType: string;
}

/** Why a CSR was refused. */
export class CsrError extends Error {
  override readonly name = "CsrError";
}

/** Largest CSR accepted, in PEM characters. */
const MAX_CSR_PEM = 16 * 1024;

/**
 * Parses a PEM CSR, checks its self-signature and its key (ECDSA P-256 or
 * P-384, or RSA of at least 2048 bits) and returns only the public key:
 * the requested subject and extensions are deliberately ignored, the CA
 * chooses them.
 */
export async function acceptCsr(pem: string): Promise<AcceptedCsr> {
  if (pem.length > MAX_CSR_PEM) throw new CsrError("CSR too large");
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(pem);
  } catch {
    throw new CsrError("not a PEM certificate request");
  }
  let valid = false;
  try {
    valid = await csr.verify();
  } catch {
    valid = false;
  }
  if (!valid) throw new CsrError("CSR signature does not verify");
  const spkiDer = Buffer.from(csr.publicKey.rawData);
  const key = createPublicKey({ key: spkiDer, format: "der", type: "spki" });
  const d = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === "ec") {
    if (d.namedCurve === "prime256v1") return { spkiDer, keyType: "ecdsa-p256" };
    if (d.namedCurve === "secp384r1") return { spkiDer, keyType: "ecdsa-p384" };
    throw new CsrError(`EC curve ${d.namedCurve ?? "?"} is not accepted (P-256 or P-384)`);
  }
  if (key.asymmetricKeyType === "rsa") {
    if ((d.modulusLength ?? 0) < 2048)
      throw new CsrError(`RSA-${d.modulusLength ?? 0} is too weak (at least 2048 bits)`);
    // Huge keys cost the CA (and every verifier) for nothing: bound them too.
    if ((d.modulusLength ?? 0) > 16384)
      throw new CsrError(`RSA-${d.modulusLength} is larger than accepted (at most 16384 bits)`);
    return { spkiDer, keyType: `rsa-${d.modulusLength}` };
  }
  throw new CsrError(`key type ${key.asymmetricKeyType ?? "?"} is not accepted`);
}

/** Makes a key pair and a CSR for it; the private key stays with the caller. */
export async function createCsr(
  commonName: string,
  algorithm: KeyAlgorithm = "ecdsa-p256",
): Promise<{ csrPem: string; keyPem: string }> {
  const keys = await generateKeyPair(algorithm);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{ CN: [commonName] }],
    keys: keys as never,
    signingAlgorithm: signingParams(algorithm),
  });
  return { csrPem: csr.toString("pem"), keyPem: await privateKeyToPem(keys.privateKey) };
}

/** Imports an SPKI public key for the certificate generator. */
export async function importSpki(spkiDer: Buffer): Promise<webcrypto.CryptoKey> {
  const key = createPublicKey({ key: spkiDer, format: "der", type: "spki" });
  const d = key.asymmetricKeyDetails ?? {};
  const params =
    key.asymmetricKeyType === "ec"
      ? { name: "ECDSA", namedCurve: d.namedCurve === "secp384r1" ? "P-384" : "P-256" }
      : { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" };
  return webcrypto.subtle.importKey("spki", spkiDer, params, true, ["verify"]);
}
