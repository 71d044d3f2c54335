// The verified client certificate of a grpc-js call, as the pipeline's
// transport-neutral PeerCertificate.

import type { PeerCertificate as TlsPeerCertificate } from "node:tls";
import type * as grpc from "@grpc/grpc-js";
import type { PeerCertificate } from "../core/index.js";

/** Any grpc-js server call the adapter handles. */
export type AnyCall =
  | grpc.ServerUnaryCall<Buffer, Buffer>
  | grpc.ServerWritableStream<Buffer, Buffer>
  | grpc.ServerDuplexStream<Buffer, Buffer>;

/** The peer certificate, only if the TLS layer verified it against the client CA. */
export function verifiedCertificate(call: AnyCall): PeerCertificate | undefined {
  const cert = call.getAuthContext().sslPeerCertificate as TlsPeerCertificate | undefined;
  if (cert === undefined) return undefined;
  const cn = cert.subject?.CN;
  return {
    // Several CNs make the identity ambiguous: treat as none.
    commonName: typeof cn === "string" ? cn : "",
    subject: formatName(cert.subject),
    issuer: formatName(cert.issuer),
    serialNumber: cert.serialNumber,
    fingerprint256: cert.fingerprint256,
    ...(Number.isFinite(Date.parse(cert.valid_to))
      ? { notAfterMs: Date.parse(cert.valid_to) }
      : {}),
  };
}

/** An X.509 name as `K=v,K=v` (several values of one key joined by `+`). */
function formatName(name: TlsPeerCertificate["subject"] | undefined): string {
  if (name === undefined) return "";
  return Object.entries(name)
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join("+") : v}`)
    .join(",");
}
