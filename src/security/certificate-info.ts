// How the EnrollmentService shows certificates and times on the wire: serials
// as openssl prints them, timestamps, the CA fingerprint agents pin.
import { X509Certificate } from "node:crypto";
import type { CertificateRecord } from "../gen/debvisor/store/v1/records_pb.js";

/** A millisecond time as a protobuf Timestamp; undefined for 0 (not set). */
export const ts = (ms: bigint | number) =>
  BigInt(ms) === 0n
    ? undefined
    : { seconds: BigInt(ms) / 1000n, nanos: Number(BigInt(ms) % 1000n) * 1_000_000 };

/** A serial as `openssl x509 -serial` prints it: upper-case hex, whole bytes. */
export function displaySerial(serial: string): string {
  const s = serial.toUpperCase();
  return s.length % 2 === 1 ? `0${s}` : s;
}

/** The SHA-256 fingerprint of a PEM certificate, as `sha256:hex` (what agents pin). */
export function caFingerprint(pem: string): string {
  return `sha256:${new X509Certificate(pem).fingerprint256.replace(/:/g, "").toLowerCase()}`;
}

/** A ledger record as the CertificateInfo message shows it. */
export const certificateInfo = (r: CertificateRecord) => ({
  serial: displaySerial(r.serial),
  subject: r.subject,
  sans: r.sans,
  issued: ts(r.issuedAtMs),
  notAfter: ts(r.notAfterMs),
  issuer: r.issuer,
  issuedBy: r.issuedBy,
  kind: r.kind,
  revoked: ts(r.revokedAtMs),
  revocationReason: r.revocationReason,
  supersededBy: r.supersededBy === "" ? "" : displaySerial(r.supersededBy),
});
