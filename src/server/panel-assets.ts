// The panel's bundled front end (dist/web), read once at start-up and served
// from memory under / with the panel's security headers.

import { existsSync, readdirSync, readFileSync } from "node:fs";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import { extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { PANEL_SECURITY_HEADERS } from "./panel-security-headers.js";

/** Where `npm run build` puts the bundled front end (dist/web). */
export const WEB_ASSETS_DIR = fileURLToPath(new URL("../../web/", import.meta.url));

/** The served files by path (`/app.js`), with their content type. */
export type PanelAssets = ReadonlyMap<string, { type: string; body: Buffer }>;

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".png": "image/png",
  ".svg": "image/svg+xml",
};

/** Reads the files of `dir` with a known type (not its subfolders); empty when `dir` is missing. */
export function loadPanelAssets(dir: string): PanelAssets {
  const out = new Map<string, { type: string; body: Buffer }>();
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) {
    const type = TYPES[extname(name)];
    if (type !== undefined) out.set(`/${name}`, { type, body: readFileSync(join(dir, name)) });
  }
  return out;
}

/**
 * Answers a request outside /rpc/ and /auth/: GET or HEAD of an asset
 * (`/` is index.html), else 405 or 404. HTML is revalidated on every load.
 */
export function servePanelAsset(
  assets: PanelAssets,
  req: Http2ServerRequest,
  res: Http2ServerResponse,
  path: string,
): void {
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.writeHead(405, PANEL_SECURITY_HEADERS);
    res.end();
    return;
  }
  const asset = assets.get(path === "/" ? "/index.html" : path);
  if (asset === undefined) {
    res.writeHead(404, { ...PANEL_SECURITY_HEADERS, "content-type": "text/plain" });
    res.end("not found");
    return;
  }
  res.writeHead(200, {
    ...PANEL_SECURITY_HEADERS,
    "content-type": asset.type,
    "cache-control": path.endsWith(".html") || path === "/" ? "no-cache" : "max-age=300",
  });
  if (req.method === "HEAD") res.end();
  else res.end(asset.body);
}
