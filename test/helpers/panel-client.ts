import { readFileSync } from "node:fs";
import { request } from "node:https";
import { join } from "node:path";
import type { DescService } from "@bufbuild/protobuf";
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";

/** A browser's view of the panel, without a browser: a cookie jar, its Origin and the CSRF header. */
export interface PanelBrowser {
  readonly cookies: Map<string, string>;
  /** POST (or GET with `body` undefined) to /auth/<path>. */
  auth(
    path: string,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<{ status: number; json: Record<string, unknown> }>;
  /** A Connect client of a service, calling /rpc/ with this browser's cookies. */
  client<S extends DescService>(service: S, headers?: Record<string, string>): Client<S>;
}

/** The dev CA of a dev-mode data directory (the panel's certificate is issued by it). */
export function devCa(dataDir: string): string {
  return readFileSync(join(dataDir, "pki", "ca.crt"), "utf8");
}

/**
 * A fresh browser against the panel at `url` (https://127.0.0.1:PORT/), trusting `caPem`;
 * `localAddress` (another loopback address, 127.0.0.2) makes its /auth/ requests come from another source.
 */
export function panelBrowser(
  url: string,
  caPem: string,
  options: { localAddress?: string } = {},
): PanelBrowser {
  const origin = url.replace(/\/$/, "");
  const cookies = new Map<string, string>();
  const cookieHeader = () => [...cookies].map(([k, v]) => `${k}=${v}`).join("; ");
  const keep = (setCookie: string[] | undefined) => {
    for (const c of setCookie ?? []) {
      const [pair = ""] = c.split(";");
      const eq = pair.indexOf("=");
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      if (/Max-Age=0\b/.test(c)) cookies.delete(name);
      else cookies.set(name, value);
    }
  };
  return {
    cookies,
    auth(path, body, headers = {}) {
      return new Promise((resolve, reject) => {
        const req = request(
          `${origin}/auth/${path}`,
          {
            method: body === undefined ? "GET" : "POST",
            ca: caPem,
            servername: "localhost",
            localAddress: options.localAddress,
            headers: {
              origin,
              "x-debvisor-csrf": "1",
              "content-type": "application/json",
              cookie: cookieHeader(),
              ...headers,
            },
          },
          (res) => {
            keep(res.headers["set-cookie"]);
            let text = "";
            res.on("data", (d: Buffer) => {
              text += d.toString();
            });
            res.on("end", () =>
              resolve({ status: res.statusCode ?? 0, json: JSON.parse(text || "{}") }),
            );
          },
        );
        req.on("error", reject);
        req.end(body === undefined ? undefined : JSON.stringify(body));
      });
    },
    client(service, headers = {}) {
      const transport = createConnectTransport({
        baseUrl: `${origin}/rpc`,
        httpVersion: "1.1",
        useBinaryFormat: true,
        nodeOptions: { ca: caPem, servername: "localhost" },
        interceptors: [
          (next) => (req) => {
            req.header.set("origin", origin);
            req.header.set("x-debvisor-csrf", "1");
            req.header.set("cookie", cookieHeader());
            for (const [k, v] of Object.entries(headers)) req.header.set(k, v);
            return next(req);
          },
        ],
      });
      return createClient(service, transport);
    },
  };
}
