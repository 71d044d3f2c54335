// What every ceiling server process does around its server: a loopback
// /metrics, one JSON line with both addresses once listening (read by
// bench-servers.ts), and a clean exit on SIGTERM so --cpu-prof writes its
// profile.
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";

/** A ceiling server's TLS material, read from --cert, --key and --ca. */
export interface CeilingTls {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly ca: Buffer;
}

/** Reads --kind, the TLS files and each of `extraFiles` (all required) from the command line. */
export function readCeilingArgs<E extends string>(
  extraFiles: readonly E[],
): { kind: string | undefined; tls: CeilingTls; files: Record<E, Buffer> } {
  const names = ["cert", "key", "ca", ...extraFiles];
  const options: Record<string, { type: "string" }> = { kind: { type: "string" } };
  for (const n of names) options[n] = { type: "string" };
  const values = parseArgs({ options }).values as Record<string, string | undefined>;
  const read = (name: string) => {
    const file = values[name];
    if (file === undefined) throw new Error(`--${name} is required`);
    return readFileSync(file);
  };
  return {
    kind: values.kind,
    tls: { cert: read("cert"), key: read("key"), ca: read("ca") },
    files: Object.fromEntries(extraFiles.map((n) => [n, read(n)])) as Record<E, Buffer>,
  };
}

/** A started ceiling server: its port on 127.0.0.1, and how to stop it. */
export interface CeilingListening {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * Starts the server `kinds[kind]` with a /metrics answering `metricsText()`,
 * prints {"address","metricsAddress"} and exits 0 on SIGTERM once closed.
 */
export async function runCeilingProcess(
  kinds: Readonly<Record<string, () => Promise<CeilingListening>>>,
  kind: string | undefined,
  metricsText: () => string,
): Promise<void> {
  const start = kind === undefined ? undefined : kinds[kind];
  if (start === undefined)
    throw new Error(`--kind must be one of ${Object.keys(kinds).join(", ")}`);
  const metrics = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/plain" }).end(metricsText());
  });
  await new Promise<void>((resolve) => metrics.listen(0, "127.0.0.1", resolve));
  const metricsPort = (metrics.address() as AddressInfo).port;
  const server = await start();
  process.stdout.write(
    `${JSON.stringify({ address: `127.0.0.1:${server.port}`, metricsAddress: `127.0.0.1:${metricsPort}` })}\n`,
  );
  process.once("SIGTERM", () => {
    // Exit normally (not by the signal) so --cpu-prof writes its profile.
    const timer = setTimeout(() => process.exit(0), 5000);
    void server.close().finally(() => {
      clearTimeout(timer);
      metrics.close();
      process.exit(0);
    });
  });
}

/** Binds a grpc-js ceiling server on a free loopback port over TLS (`requireClientCert`: mTLS). */
export async function listenGrpc(
  server: grpc.Server,
  tls: CeilingTls,
  requireClientCert: boolean,
): Promise<CeilingListening> {
  const credentials = grpc.ServerCredentials.createSsl(
    tls.ca,
    [{ cert_chain: tls.cert, private_key: tls.key }],
    requireClientCert,
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", credentials, (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { port, close: () => new Promise((resolve) => server.tryShutdown(() => resolve())) };
}
