import { checkServerIdentity, type PeerCertificate } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import type { ResolvedContext } from "./context-file.js";

/** Largest response a client accepts; matches the server's default response limit. */
const MAX_RESPONSE_BYTES = 10 * 1024 * 1024;

/**
 * Opens a TLS channel to the context's server: mTLS with its client
 * certificate, or TLS with `authorization: Bearer` on every call. TLS is
 * always on; `insecureSkipTlsVerify` accepts any server certificate.
 * `verifyServer` checks the server's certificate further, once the chain
 * and name are verified: an Error it returns fails the handshake (before
 * any call is sent).
 */
export function openChannel(
  ctx: ResolvedContext,
  extra: grpc.ChannelOptions = {},
  verifyServer?: (cert: PeerCertificate) => Error | undefined,
): grpc.Client {
  const tls = grpc.credentials.createSsl(
    ctx.caPem === "" ? null : Buffer.from(ctx.caPem),
    ctx.keyPem === undefined ? null : Buffer.from(ctx.keyPem),
    ctx.certPem === undefined ? null : Buffer.from(ctx.certPem),
    ctx.insecureSkipTlsVerify === true
      ? { rejectUnauthorized: false, checkServerIdentity: () => undefined }
      : verifyServer === undefined
        ? {}
        : {
            checkServerIdentity: (host, cert) =>
              checkServerIdentity(host, cert) ?? verifyServer(cert),
          },
  );
  const bearer = ctx.bearer;
  const creds =
    bearer === undefined
      ? tls
      : grpc.credentials.combineChannelCredentials(
          tls,
          grpc.credentials.createFromMetadataGenerator((_params, callback) => {
            const md = new grpc.Metadata();
            md.set("authorization", `Bearer ${bearer}`);
            callback(null, md);
          }),
        );
  const options: grpc.ChannelOptions = {
    "grpc.max_receive_message_length": MAX_RESPONSE_BYTES,
    ...(ctx.tlsServerName === undefined
      ? {}
      : { "grpc.ssl_target_name_override": ctx.tlsServerName }),
    ...extra,
  };
  return new grpc.Client(ctx.server, creds, options);
}
