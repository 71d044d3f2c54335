// Reading a request to the panel's listener: its headers as the panel layer
// wants them (HTTP/2's `:authority` as the host) and a size-bounded JSON body.

import type { Http2ServerRequest } from "node:http2";

/** A request's string headers by lower-case name; `host` is `:authority` on HTTP/2, `Host` on HTTP/1.1. */
export function panelRequestHeaders(req: Http2ServerRequest): {
  get(name: string): string | undefined;
} {
  return {
    get: (name: string) => {
      const v =
        name === "host" ? (req.headers[":authority"] ?? req.headers.host) : req.headers[name];
      return typeof v === "string" ? v : undefined;
    },
  };
}

/**
 * The request body parsed as JSON: `"too-large"` past `max` bytes (read to
 * the end, not kept), undefined when it does not parse or the request fails.
 */
export function readJsonBody(req: Http2ServerRequest, max: number): Promise<unknown> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size <= max) chunks.push(c);
    });
    req.on("end", () => {
      if (size > max) return resolve("too-large");
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")));
      } catch {
        resolve(undefined);
      }
    });
    req.on("error", () => resolve(undefined));
  });
}
