// The pki layer: key generation, a certificate authority and certificate
// issuing on WebCrypto with @peculiar/x509. No file or network I/O.

export type {
  CaOptions,
  CertificateAuthority,
  CertificateUsage,
  CertifiedKey,
  IssueOptions,
} from "./certificate-authority.js";
export {
  createCertificateAuthority,
  loadCertificateAuthority,
} from "./certificate-authority.js";
export type { AcceptedCsr } from "./certificate-request.js";
export { acceptCsr, CsrError, createCsr } from "./certificate-request.js";
export type { KeyAlgorithm } from "./key-algorithm.js";
export {
  generateKeyPair,
  KEY_ALGORITHMS,
  privateKeyFromPem,
  privateKeyToPem,
} from "./key-algorithm.js";
