// The Connect adapter of the panel's /rpc/ routes: the services behind the
// same stages as gRPC, each call authenticated by the access token in the
// session cookie (a bearer JWT to the authentication stage).

import type { CallObserver, Logger, ServiceBinding, Stage } from "../core/index.js";
import { COOKIES, type PanelSessions, parseCookies } from "../panel/index.js";
import type { Config } from "./config-schema.js";
import { type ConnectAdapter, createConnectAdapter } from "./connect-adapter.js";

/** What {@link createPanelRpcAdapter} needs. */
export interface PanelRpcAdapterOptions {
  readonly services: readonly ServiceBinding[];
  readonly stages: readonly Stage[];
  readonly observer: CallObserver;
  readonly logger: Logger;
  readonly limits: Config["limits"];
  readonly sessions: PanelSessions;
}

/**
 * Creates the adapter under `/rpc`; a call's caller is the peer address, the
 * access cookie as `Bearer` authorization, and the session it names (so the
 * session's end can end its streams).
 */
export function createPanelRpcAdapter(o: PanelRpcAdapterOptions): ConnectAdapter {
  return createConnectAdapter({
    services: o.services,
    stages: o.stages,
    observer: o.observer,
    logger: o.logger,
    maxRequestBytes: o.limits.maxRequestBytes,
    maxResponseBytes: o.limits.maxResponseBytes,
    pathPrefix: "/rpc",
    caller(req) {
      const cookie = req.headers.cookie;
      const token = parseCookies(typeof cookie === "string" ? cookie : undefined).get(
        COOKIES.access,
      );
      return {
        address: `${req.socket.remoteAddress ?? ""}:${req.socket.remotePort ?? 0}`,
        authorization: token === undefined ? undefined : `Bearer ${token}`,
        sessionId: token === undefined ? undefined : o.sessions.sessionIdOf(token),
      };
    },
  });
}
