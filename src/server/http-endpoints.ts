import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "../core/index.js";
import { bindError } from "./bind-error.js";
import type { Metrics } from "./metrics.js";

/** Options of {@link startHttpEndpoints}. */
export interface HttpEndpointsOptions {
  readonly host: string;
  readonly port: number;
  readonly metrics: Metrics;
  /** Why the daemon is not ready (starting, draining, store or audit trail not writable); empty when ready. */
  readonly notReady: () => readonly string[];
  readonly logger: Logger;
}

/** The operational HTTP endpoints: /metrics, /healthz (process alive), /readyz (serving). */
export interface HttpEndpoints {
  readonly address: AddressInfo;
  close(): Promise<void>;
}

/**
 * Serves the operational endpoints on their own port. Plain HTTP, so it binds
 * to loopback by default; only GET and HEAD, small timeouts, no bodies read.
 */
export async function startHttpEndpoints(options: HttpEndpointsOptions): Promise<HttpEndpoints> {
  const server: Server = createServer((req, res) => {
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/healthz") {
      res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
    } else if (path === "/readyz") {
      const reasons = options.notReady();
      res
        .writeHead(reasons.length === 0 ? 200 : 503, { "content-type": "text/plain" })
        .end(reasons.length === 0 ? "ready\n" : `not ready: ${reasons.join("; ")}\n`);
    } else if (path === "/metrics") {
      options.metrics.registry.metrics().then(
        (text) =>
          res.writeHead(200, { "content-type": options.metrics.registry.contentType }).end(text),
        (err: unknown) => {
          options.logger.error({ err }, "metrics collection failed");
          res.writeHead(500).end();
        },
      );
    } else {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
    }
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  server.keepAliveTimeout = 5_000;
  server.maxRequestsPerSocket = 1000;
  server.maxHeadersCount = 64;
  await new Promise<void>((resolve, reject) => {
    const failed = (err: Error) =>
      reject(
        bindError("--metrics-listen", "metrics.listen", `${options.host}:${options.port}`, err),
      );
    server.once("error", failed);
    server.listen(options.port, options.host, () => {
      server.off("error", failed);
      resolve();
    });
  });
  return {
    address: server.address() as AddressInfo,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
