import { request } from "node:https";
import { timeoutSignal } from "../core/index.js";

/** Largest answer read from an issuer (discovery, JWKS, token endpoint). */
const MAX_BODY_BYTES = 1 << 20;

/** The fetch the OpenID Connect client uses: `(url, init) => Response`. */
export type IssuerFetch = (
  url: string,
  init: {
    method: string;
    headers: Record<string, string>;
    body?: unknown;
    signal?: AbortSignal;
  },
) => Promise<Response>;

/**
 * A fetch for talking to an identity provider: HTTPS only, the server's
 * certificate verified against `caPem` when given (a private issuer) or the
 * system's trust store, no redirects followed, answers over 1 MiB refused.
 * Node 20's global fetch takes no CA of its own, hence this.
 */
export function createIssuerFetch(caPem: string | undefined): IssuerFetch {
  return (url, init) =>
    new Promise((resolve, reject) => {
      const target = new URL(url);
      if (target.protocol !== "https:") {
        reject(new TypeError(`refusing to contact ${target.origin}: not https`));
        return;
      }
      const raw = init.body;
      const body =
        raw === undefined || raw === null
          ? undefined
          : raw instanceof URLSearchParams
            ? raw.toString()
            : raw;
      if (body !== undefined && typeof body !== "string" && !(body instanceof Uint8Array)) {
        reject(new TypeError("unsupported request body"));
        return;
      }
      // A length, not chunked encoding, which some token endpoints refuse.
      const length =
        body === undefined ? {} : { "content-length": String(Buffer.byteLength(body)) };
      const req = request(
        target,
        {
          method: init.method,
          headers: { ...init.headers, ...length },
          ...(caPem === undefined ? {} : { ca: caPem }),
          // `timeout` only measures silence; the whole exchange is bounded too.
          signal: timeoutSignal(10_000, init.signal ?? undefined),
          timeout: 10_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on("data", (c: Buffer) => {
            size += c.length;
            if (size > MAX_BODY_BYTES) res.destroy(new Error(`${target.origin}: answer too large`));
            else chunks.push(c);
          });
          res.on("error", reject);
          res.on("end", () => {
            const headers = new Headers();
            for (const [k, v] of Object.entries(res.headers)) {
              if (Array.isArray(v)) for (const one of v) headers.append(k, one);
              else if (v !== undefined) headers.set(k, v);
            }
            const status = res.statusCode ?? 502;
            const body = status === 204 || status === 304 ? null : Buffer.concat(chunks);
            resolve(new Response(body, { status, headers }));
          });
        },
      );
      req.on("timeout", () => req.destroy(new Error(`${target.origin}: no answer in 10 s`)));
      req.on("error", reject);
      req.end(body);
    });
}
