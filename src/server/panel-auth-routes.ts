// The panel listener's /auth/ routes: the JSON endpoints of the panel layer's
// PanelAuth, and the OpenID Connect navigations (/auth/oidc/start and
// /auth/oidc/callback) answered with redirects.

import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import { type OidcSignIn, type PanelAuth, parseCookies } from "../panel/index.js";
import { sourceOf } from "../security/index.js";
import { panelRequestHeaders, readJsonBody } from "./panel-request.js";
import { PANEL_SECURITY_HEADERS } from "./panel-security-headers.js";

/** What {@link createPanelAuthRoutes} needs. */
export interface PanelAuthRoutesOptions {
  readonly auth: PanelAuth;
  /** Undefined when `panel.oidc` is not configured: its routes answer 404. */
  readonly oidc: OidcSignIn | undefined;
  /** The origins the panel's own page may call from, given the request's host. */
  readonly originsOf: (host: string | undefined) => string[];
}

/** Largest /auth/ request body read (a sign-in, a user's new password). */
const MAX_AUTH_BODY = 8192;

/** Handlers of /auth/ requests; a rejected promise is the router's to answer (500). */
export interface PanelAuthRoutes {
  /** /auth/<path> (not OIDC): `path` is the part after /auth/. */
  auth(req: Http2ServerRequest, res: Http2ServerResponse, path: string): Promise<void>;
  /** /auth/oidc/start or /auth/oidc/callback: `path` is the whole path. */
  oidc(req: Http2ServerRequest, res: Http2ServerResponse, path: string): Promise<void>;
}

/** Creates the /auth/ handlers over the panel layer's sign-in parts. */
export function createPanelAuthRoutes(o: PanelAuthRoutesOptions): PanelAuthRoutes {
  const { auth, oidc, originsOf } = o;

  async function onAuth(req: Http2ServerRequest, res: Http2ServerResponse, path: string) {
    const body = req.method === "POST" ? await readJsonBody(req, MAX_AUTH_BODY) : undefined;
    const headers = panelRequestHeaders(req);
    // Refused before anything reads it, as the gRPC transport refuses an oversize message.
    const r =
      body === "too-large"
        ? {
            status: 413,
            json: {
              reason: "INVALID_ARGUMENT",
              message: `request body larger than ${MAX_AUTH_BODY / 1024} KiB`,
            },
            cookies: [],
          }
        : await auth.handle({
            method: req.method,
            path,
            headers,
            origins: originsOf(headers.get("host")),
            source: sourceOf(`${req.socket.remoteAddress ?? ""}:0`),
            body,
          });
    res.writeHead(r.status, {
      ...PANEL_SECURITY_HEADERS,
      "content-type": "application/json",
      "cache-control": "no-store",
      "set-cookie": [...r.cookies],
    });
    res.end(JSON.stringify(r.json));
  }

  // Top-level navigations (a link, the issuer's redirect back): no custom
  // header can ride on them; the flow cookie and its state guard the callback.
  async function onOidc(req: Http2ServerRequest, res: Http2ServerResponse, path: string) {
    const headers = { ...PANEL_SECURITY_HEADERS, "cache-control": "no-store" };
    if (oidc === undefined || req.method !== "GET") {
      res.writeHead(oidc === undefined ? 404 : 405, { ...headers, "content-type": "text/plain" });
      res.end(oidc === undefined ? "OpenID Connect sign-in is not configured" : "");
      return;
    }
    const source = sourceOf(`${req.socket.remoteAddress ?? ""}:0`);
    const query = (req.url ?? "").split("?")[1] ?? "";
    const cookies = parseCookies(panelRequestHeaders(req).get("cookie"));
    const r = path.endsWith("/start")
      ? await oidc.start(source)
      : await oidc.callback(query.slice(0, 8192), source, cookies);
    res.writeHead(303, { ...headers, location: r.location, "set-cookie": [...r.cookies] });
    res.end();
  }

  return { auth: onAuth, oidc: onOidc };
}
