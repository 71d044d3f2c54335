// The panel's HTTPS listener: composes the bundled front end
// (panel-assets.ts), the /auth/ routes (panel-auth-routes.ts), the /rpc/
// Connect adapter (panel-rpc-adapter.ts) and the router between them
// (panel-router.ts), then binds it (panel-listen.ts) and owns its lifecycle.

import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { createSecureServer, type Http2SecureServer } from "node:http2";
import { join } from "node:path";
import type {
  CallObserver,
  Clock,
  Logger,
  Principal,
  ServiceBinding,
  Stage,
} from "../core/index.js";
import {
  createLoginThrottle,
  createPanelAuth,
  createPanelUsers,
  type PanelAuditSink,
  type PanelSessions,
} from "../panel/index.js";
import type { AccessPolicy, Take } from "../security/index.js";
import type { KvStore } from "../store/index.js";
import type { Config } from "./config-schema.js";
import { loadPanelAssets, WEB_ASSETS_DIR } from "./panel-assets.js";
import { createPanelAuthRoutes } from "./panel-auth-routes.js";
import { listenPanel } from "./panel-listen.js";
import { startPanelOidc } from "./panel-oidc-setup.js";
import { createPanelRouter } from "./panel-router.js";
import { createPanelRpcAdapter } from "./panel-rpc-adapter.js";
import type { TlsMaterial } from "./tls-material.js";

/** Options of {@link startPanelServer}. */
export interface PanelServerOptions {
  readonly config: Config["panel"];
  readonly tls: TlsMaterial;
  readonly limits: Config["limits"];
  readonly tlsMinVersion: Config["tls"]["minVersion"];
  readonly services: readonly ServiceBinding[];
  readonly stages: readonly Stage[];
  readonly observer: CallObserver;
  readonly logger: Logger;
  readonly store: KvStore;
  readonly clock: Clock;
  readonly sessions: PanelSessions;
  readonly policy: () => AccessPolicy;
  /** The per-principal rate limit gRPC calls spend from; undefined when rate limits are off. */
  readonly rateLimit: ((principal: Principal) => Take) | undefined;
  /** The per-source rate limit gRPC calls spend from before authentication; undefined when off. */
  readonly sourceLimit: ((source: string) => Take) | undefined;
  /** The audit trail and its refusal counts; undefined when audit is off. */
  readonly audit: PanelAuditSink | undefined;
  /** Puts the panel's listener under the gRPC port's connection limits (one descriptor budget). */
  readonly guard: (server: Http2SecureServer) => void;
  /** Dev mode: sets a fresh one-time password for user `admin` and reports it here. */
  readonly devAdmin?: { readonly dataDir: string };
  readonly assetsDir?: string;
}

/** A serving panel. */
export interface PanelServer {
  /** https://HOST:PORT/ */
  readonly url: string;
  /** Dev mode: the one-time password of user admin. */
  readonly devAdminPassword: string | undefined;
  reloadTls(tls: TlsMaterial): void;
  inFlight(): number;
  close(): Promise<void>;
}

/**
 * Starts the panel's HTTPS listener (HTTP/2 with HTTP/1.1 fallback): the
 * bundled page under /, sign-in under /auth/, and the Connect form of the
 * services under /rpc/, where every call must come from the panel's own page
 * and carries the session's access token to the shared authentication stage.
 */
export async function startPanelServer(o: PanelServerOptions): Promise<PanelServer> {
  const assets = loadPanelAssets(o.assetsDir ?? WEB_ASSETS_DIR);
  const users = createPanelUsers(o.store, o.clock);
  let devAdminPassword: string | undefined;
  if (o.devAdmin !== undefined) {
    devAdminPassword = randomBytes(12).toString("base64url");
    await users.setPassword("admin", devAdminPassword, "dev-mode", true);
    writeFileSync(join(o.devAdmin.dataDir, "panel-admin-password"), `${devAdminPassword}\n`, {
      mode: 0o600,
    });
  }
  const originsOf = (host: string | undefined) => [
    ...(host === undefined ? [] : [`https://${host}`]),
    ...o.config.origins,
  ];
  const principalOf = async (token: string): Promise<Principal | undefined> => {
    if (token === "") return undefined;
    const r = await o.sessions.verifier.verify(token);
    return "failure" in r
      ? undefined
      : { id: r.identity.subject, method: "jwt", roles: [], tenant: r.identity.tenant };
  };
  const adapter = createPanelRpcAdapter(o);
  const unsubscribe = o.sessions.onEnd((sid) => adapter.endSession(sid));
  const sweeper = setInterval(() => {
    o.sessions
      .sweep()
      .catch((err: unknown) => o.logger.warn({ err }, "panel session sweep failed"));
  }, 3_600_000);
  sweeper.unref();
  const throttle = createLoginThrottle({
    clock: o.clock,
    perAddress: o.config.loginPerAddress,
    perAccount: o.config.loginPerAccount,
  });
  const oidc = startPanelOidc({ ...o, throttle });
  const auth = createPanelAuth({
    oidcName: oidc?.name,
    users,
    sessions: o.sessions,
    throttle,
    policy: o.policy,
    audit: o.audit,
    clock: o.clock,
    logger: o.logger,
    principalOf,
    rateLimit: o.rateLimit,
    sourceLimit: o.sourceLimit,
  });
  const routes = createPanelAuthRoutes({ auth, oidc, originsOf });

  const server: Http2SecureServer = createSecureServer(
    {
      cert: o.tls.certPem,
      key: o.tls.keyPem,
      minVersion: o.tlsMinVersion,
      allowHTTP1: true,
      maxSessionMemory: o.limits.maxSessionMemoryMib,
      settings: { maxConcurrentStreams: o.limits.maxConcurrentStreams },
    },
    createPanelRouter({ adapter, routes, assets, originsOf, logger: o.logger }),
  );
  o.guard(server);
  const url = await listenPanel(server, o.config.listen, o.devAdmin !== undefined, o.logger);
  return {
    url,
    devAdminPassword,
    reloadTls: (tls) => server.setSecureContext({ cert: tls.certPem, key: tls.keyPem }),
    inFlight: () => adapter.inFlight(),
    close() {
      unsubscribe();
      clearInterval(sweeper);
      adapter.abortAll("panel closing");
      return new Promise((resolve) => {
        server.close(() => resolve());
        // Open HTTP/2 sessions and keep-alive connections would hold close() up.
        setTimeout(resolve, 2000).unref();
      });
    },
  };
}
