import * as grpc from "@grpc/grpc-js";

/** A grpc-js channel to a test server: TLS verified against `caPem`, with an optional client certificate. */
export function testChannel(
  address: string,
  tls: { caPem: string; certPem?: string; keyPem?: string },
  options: grpc.ChannelOptions = {},
): grpc.Client {
  const creds = grpc.credentials.createSsl(
    Buffer.from(tls.caPem),
    tls.keyPem === undefined ? null : Buffer.from(tls.keyPem),
    tls.certPem === undefined ? null : Buffer.from(tls.certPem),
  );
  return new grpc.Client(address, creds, {
    "grpc.ssl_target_name_override": "localhost",
    "grpc.max_receive_message_length": 64 * 1024 * 1024,
    "grpc.max_send_message_length": 64 * 1024 * 1024,
    ...options,
  });
}

/** Sends raw request bytes to `path` and returns the raw response, or the gRPC error with its trailers. */
export function rawUnary(
  channel: grpc.Client,
  path: string,
  request: Buffer,
  metadata: grpc.Metadata = new grpc.Metadata(),
): Promise<{ response?: Buffer; error?: grpc.ServiceError; trailers?: grpc.Metadata }> {
  return new Promise((resolve) => {
    let trailers: grpc.Metadata | undefined;
    const call = channel.makeUnaryRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      request,
      metadata,
      { deadline: Date.now() + 20_000 },
      (error, response) => {
        // The status event may follow the callback; give it a tick.
        setImmediate(() =>
          resolve({ response: response ?? undefined, error: error ?? undefined, trailers }),
        );
      },
    );
    call.on("status", (s: grpc.StatusObject) => {
      trailers = s.metadata;
    });
  });
}
