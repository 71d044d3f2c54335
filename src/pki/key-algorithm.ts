import { createPrivateKey, webcrypto } from "node:crypto";

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

/** Key types the CA issues and accepts. ECDSA P-256 is the default (far faster TLS handshakes than RSA). */
export type KeyAlgorithm = "ecdsa-p256" | "ecdsa-p384" | "rsa-2048" | "rsa-4096";

/** All supported key algorithms, for configuration schemas. */
export const KEY_ALGORITHMS: readonly KeyAlgorithm[] = [
  "ecdsa-p256",
  "ecdsa-p384",
  "rsa-2048",
  "rsa-4096",
];

type SigningParams =
  | (webcrypto.EcKeyGenParams & { hash: string })
  | (webcrypto.RsaHashedKeyGenParams & { hash: string });

/** WebCrypto parameters that generate a key of `alg` and sign with it. */
export function signingParams(alg: KeyAlgorithm): SigningParams {
  switch (alg) {
    case "ecdsa-p256":
      return { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
    case "ecdsa-p384":
      return { name: "ECDSA", namedCurve: "P-384", hash: "SHA-384" };
    case "rsa-2048":
    case "rsa-4096":
      return {
        name: "RSASSA-PKCS1-v1_5",
        modulusLength: alg === "rsa-2048" ? 2048 : 4096,
        publicExponent: new Uint8Array([1, 0, 1]),
        hash: "SHA-256",
      };
  }
}

/** Generates an extractable key pair for signing. */
export async function generateKeyPair(alg: KeyAlgorithm): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(signingParams(alg), true, [
    "sign",
    "verify",
  ])) as CryptoKeyPair;
}

/** Exports a private key as PKCS#8 PEM. */
export async function privateKeyToPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", key));
  const b64 = der.toString("base64").replace(/(.{64})/g, "$1\n");
  return `-----BEGIN PRIVATE KEY-----\n${b64.trimEnd()}\n-----END PRIVATE KEY-----\n`;
}

/** Imports a PEM private key (PKCS#8, SEC1 or PKCS#1) for signing, detecting its algorithm. */
export async function privateKeyFromPem(
  pem: string,
): Promise<{ key: CryptoKey; alg: KeyAlgorithm }> {
  const keyObject = createPrivateKey(pem);
  const details = keyObject.asymmetricKeyDetails ?? {};
  let alg: KeyAlgorithm;
  if (keyObject.asymmetricKeyType === "ec") {
    if (details.namedCurve === "prime256v1") alg = "ecdsa-p256";
    else if (details.namedCurve === "secp384r1") alg = "ecdsa-p384";
    else throw new Error(`unsupported EC curve ${details.namedCurve ?? "?"}`);
  } else if (keyObject.asymmetricKeyType === "rsa") {
    alg = (details.modulusLength ?? 0) >= 4096 ? "rsa-4096" : "rsa-2048";
  } else {
    throw new Error(`unsupported key type ${keyObject.asymmetricKeyType ?? "?"}`);
  }
  const der = keyObject.export({ format: "der", type: "pkcs8" });
  const key = await webcrypto.subtle.importKey("pkcs8", der, signingParams(alg), false, ["sign"]);
  return { key: key as CryptoKey, alg };
}
