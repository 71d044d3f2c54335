// Binding the panel's listener to `panel.listen`, with dev mode's fallback to
// a free port when the configured one is taken.

import type { Http2SecureServer } from "node:http2";
import type { Logger } from "../core/index.js";

/**
 * Listens on `listen` (`HOST:PORT`, IPv6 hosts in brackets) and returns the
 * panel's URL (`https://HOST:PORT/`). In dev mode a port in use falls back
 * to a free one, with a warning; any other bind error is thrown.
 */
export async function listenPanel(
  server: Http2SecureServer,
  listen: string,
  devMode: boolean,
  logger: Logger,
): Promise<string> {
  const at = listen.lastIndexOf(":");
  const host = listen.slice(0, at).replace(/^\[|\]$/g, "");
  const bind = (port: number) =>
    new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.removeListener("error", reject);
        resolve();
      });
    });
  try {
    await bind(Number(listen.slice(at + 1)));
  } catch (err) {
    // Dev mode is for people (and tests running several dev daemons): a taken port is no reason to stop.
    if (!devMode || (err as NodeJS.ErrnoException).code !== "EADDRINUSE") throw err;
    logger.warn({ listen }, "panel port in use; dev mode serves the panel on a free port");
    await bind(0);
  }
  const addr = server.address();
  const port = typeof addr === "object" && addr !== null ? addr.port : 0;
  return `https://${host.includes(":") ? `[${host}]` : host}:${port}/`;
}
