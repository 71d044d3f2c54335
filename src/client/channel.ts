import * as grpc from "@grpc/grpc-js";
import type { ResolvedContext } from "./context-file.js";

/** Largest response a client accepts; matches the server's default response limit. */
const MAX_RESPONSE_BYTES = 10 * 1024 * 1024;

/** Opens a TLS channel (mTLS with the context's client certificate) to the context's server. */
export function openChannel(ctx: ResolvedContext, extra: grpc.ChannelOptions = {}): grpc.Client {
  const creds = grpc.credentials.createSsl(
    Buffer.from(ctx.caPem),
    Buffer.from(ctx.keyPem),
    Buffer.from(ctx.certPem),
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
