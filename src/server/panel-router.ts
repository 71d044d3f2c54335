// The panel listener's request router: /rpc/ (only from the panel's own
// page) to the Connect adapter, /auth/ to the sign-in routes, the rest to
// the bundled front end.

import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import type { Logger } from "../core/index.js";
import { isPanelRequest } from "../panel/index.js";
import type { ConnectAdapter } from "./connect-adapter.js";
import { type PanelAssets, servePanelAsset } from "./panel-assets.js";
import type { PanelAuthRoutes } from "./panel-auth-routes.js";
import { panelRequestHeaders } from "./panel-request.js";
import { PANEL_SECURITY_HEADERS } from "./panel-security-headers.js";

/** What {@link createPanelRouter} routes to. */
export interface PanelRouterOptions {
  readonly adapter: ConnectAdapter;
  readonly routes: PanelAuthRoutes;
  readonly assets: PanelAssets;
  /** The origins the panel's own page may call from, given the request's host. */
  readonly originsOf: (host: string | undefined) => string[];
  readonly logger: Logger;
}

/**
 * Creates the listener's request handler. A call under /rpc/ without the
 * panel's header or from another origin is refused (403) before the adapter
 * sees it; a failed /auth/ request is logged and answered 500.
 */
export function createPanelRouter(
  o: PanelRouterOptions,
): (req: Http2ServerRequest, res: Http2ServerResponse) => void {
  const { adapter, routes, assets, originsOf } = o;
  return (req, res) => {
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    if (path.startsWith("/rpc/")) {
      const headers = panelRequestHeaders(req);
      if (!isPanelRequest(req.method, headers, originsOf(headers.get("host")))) {
        res.writeHead(403, { ...PANEL_SECURITY_HEADERS, "content-type": "application/json" });
        res.end(
          JSON.stringify({
            code: "permission_denied",
            message: "request refused: not from the panel's own page",
          }),
        );
        return;
      }
      void adapter.handle(req, res);
      return;
    }
    if (path === "/auth/oidc/start" || path === "/auth/oidc/callback") {
      routes.oidc(req, res, path).catch((err: unknown) => {
        o.logger.error({ err }, "panel sign-in request failed");
        if (!res.headersSent) res.writeHead(500);
        res.end();
      });
      return;
    }
    if (path.startsWith("/auth/")) {
      routes.auth(req, res, path.slice("/auth/".length)).catch((err: unknown) => {
        o.logger.error({ err }, "panel auth request failed");
        if (!res.headersSent) res.writeHead(500);
        res.end();
      });
      return;
    }
    servePanelAsset(assets, req, res, path);
  };
}
