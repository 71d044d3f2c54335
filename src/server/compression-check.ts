import { constants as h2, type IncomingHttpHeaders, type ServerHttp2Stream } from "node:http2";

/** The message encodings grpc-js 1.14 decompresses (its server-interceptors.ts), as it advertises them. */
const ACCEPTED_ENCODINGS = "identity,deflate,gzip";
const accepted = new Set(ACCEPTED_ENCODINGS.split(","));
const UNIMPLEMENTED = 12;
const INTERNAL = 13;

/**
 * Holds a gRPC request to the compression rules of the gRPC spec
 * (doc/compression.md) that grpc-js does not keep: a `grpc-encoding` the
 * server cannot decode is answered UNIMPLEMENTED with `grpc-accept-encoding`,
 * and a message with the compressed flag sent without an encoding (or with
 * `identity`) is answered INTERNAL instead of reaching the handler as raw
 * bytes. Returns false when the request was refused at its headers; grpc-js
 * must then not see the stream. Must be called before grpc-js's own stream
 * listener, so that its data listener sees every chunk first: once it has
 * answered, the stream is closed and grpc-js drops the rest.
 */
export function checkCompression(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): boolean {
  const contentType = headers[h2.HTTP2_HEADER_CONTENT_TYPE];
  // grpc-js answers anything else with 415 itself.
  if (typeof contentType !== "string" || !contentType.startsWith("application/grpc")) return true;
  const encoding = headers["grpc-encoding"] ?? "identity";
  if (typeof encoding !== "string" || !accepted.has(encoding)) {
    refuse(stream, UNIMPLEMENTED, `message encoding "${String(encoding)}" is not supported`);
    return false;
  }
  if (encoding !== "identity") return true;
  // Walk the length-prefixed messages: a flag byte, a 4-byte length, the bytes.
  let prefix: Buffer = Buffer.alloc(0);
  let skip = 0;
  const onData = (chunk: Buffer) => {
    let at = 0;
    while (at < chunk.length) {
      if (skip > 0) {
        const n = Math.min(skip, chunk.length - at);
        skip -= n;
        at += n;
        continue;
      }
      const taken = chunk.subarray(at, at + 5 - prefix.length);
      prefix = Buffer.concat([prefix, taken]);
      at += taken.length;
      if (prefix.length < 5) return;
      if (prefix[0] !== 0) {
        stream.off("data", onData);
        refuse(stream, INTERNAL, "compressed message without a grpc-encoding");
        return;
      }
      skip = prefix.readUInt32BE(1);
      prefix = Buffer.alloc(0);
    }
  };
  stream.on("data", onData);
  return true;
}

/** Ends the call with `code`: trailers-only while no headers went out, else a reset (INTERNAL to the client). */
function refuse(stream: ServerHttp2Stream, code: number, message: string): void {
  if (stream.closed || stream.destroyed) return;
  if (stream.headersSent) {
    stream.close(h2.NGHTTP2_INTERNAL_ERROR);
    return;
  }
  stream.respond(
    {
      [h2.HTTP2_HEADER_STATUS]: 200,
      [h2.HTTP2_HEADER_CONTENT_TYPE]: "application/grpc+proto",
      "grpc-status": String(code),
      "grpc-message": encodeURIComponent(message),
      "grpc-accept-encoding": ACCEPTED_ENCODINGS,
    },
    { endStream: true },
  );
  // Closed now, so grpc-js drops whatever the client still sends.
  stream.close(h2.NGHTTP2_NO_ERROR);
}
