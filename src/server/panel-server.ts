import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import {
  createSecureServer,
  type Http2SecureServer,
  type Http2ServerRequest,
  type Http2ServerResponse,
} from "node:http2";
import { extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type {
  CallObserver,
  Clock,
  Logger,
  Principal,
  ServiceBinding,
  Stage,
} from "../core/index.js";
import {
  COOKIES,
  createLoginThrottle,
  createOidcSignIn,
  createPanelAuth,
  createPanelUsers,
  isPanelRequest,
  type PanelAuditSink,
  type PanelSessions,
  parseCookies,
} from "../panel/index.js";
import type { AccessPolicy, Take } from "../security/index.js";
import { sourceOf } from "../security/index.js";
import type { KvStore } from "../store/index.js";
import { ConfigError } from "./config-loader.js";
import type { Config } from "./config-schema.js";
import { createConnectAdapter } from "./connect-adapter.js";
import type { TlsMaterial } from "./tls-material.js";

/** Where `npm run build` puts the bundled front end (dist/web). */
export const WEB_ASSETS_DIR = fileURLToPath(new URL("../../web/", import.meta.url));

/**
 * The panel's Content-Security-Policy: only its own bundled script and
 * stylesheet, no inline script or style, no framing, calls only to itself.
 */
export const PANEL_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

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

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".png": "image/png",
  ".svg": "image/svg+xml",
};
const SECURITY_HEADERS = {
  "content-security-policy": PANEL_CSP,
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
  "strict-transport-security": "max-age=31536000",
  "permissions-policy": "camera=(), microphone=(), geolocation=()",
};

/**
 * Starts the panel's HTTPS listener (HTTP/2 with HTTP/1.1 fallback): the
 * bundled page under /, sign-in under /auth/, and the Connect form of the
 * services under /rpc/, where every call must come from the panel's own page
 * and carries the session's access token to the shared authentication stage.
 */
export async function startPanelServer(o: PanelServerOptions): Promise<PanelServer> {
  const assets = loadAssets(o.assetsDir ?? WEB_ASSETS_DIR);
  const users = createPanelUsers(o.store, o.clock);
  let devAdminPassword: string | undefined;
  if (o.devAdmin !== undefined) {
    devAdminPassword = randomBytes(12).toString("base64url");
    await users.setPassword("admin", devAdminPassword, "dev-mode", true);
    writeFileSync(join(o.devAdmin.dataDir, "panel-admin-password"), `${devAdminPassword}\n`, {
      mode: 0o600,
    });
  }
  let url = "";
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
  const adapter = createConnectAdapter({
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
  const headersOf = (req: Http2ServerRequest) => ({
    get: (name: string) => {
      const v =
        name === "host" ? (req.headers[":authority"] ?? req.headers.host) : req.headers[name];
      return typeof v === "string" ? v : undefined;
    },
  });
  const oidc = startOidc(o, throttle);
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

  async function onAuth(req: Http2ServerRequest, res: Http2ServerResponse, path: string) {
    const body = req.method === "POST" ? await readJson(req, 8192) : undefined;
    const headers = headersOf(req);
    const r = await auth.handle({
      method: req.method,
      path,
      headers,
      origins: originsOf(headers.get("host")),
      source: sourceOf(`${req.socket.remoteAddress ?? ""}:0`),
      body: body === "too-large" ? undefined : body,
    });
    res.writeHead(r.status, {
      ...SECURITY_HEADERS,
      "content-type": "application/json",
      "cache-control": "no-store",
      "set-cookie": [...r.cookies],
    });
    res.end(JSON.stringify(r.json));
  }

  // Top-level navigations (a link, the issuer's redirect back): no custom
  // header can ride on them; the flow cookie and its state guard the callback.
  async function onOidc(req: Http2ServerRequest, res: Http2ServerResponse, path: string) {
    const headers = { ...SECURITY_HEADERS, "cache-control": "no-store" };
    if (oidc === undefined || req.method !== "GET") {
      res.writeHead(oidc === undefined ? 404 : 405, { ...headers, "content-type": "text/plain" });
      res.end(oidc === undefined ? "OpenID Connect sign-in is not configured" : "");
      return;
    }
    const source = sourceOf(`${req.socket.remoteAddress ?? ""}:0`);
    const query = (req.url ?? "").split("?")[1] ?? "";
    const cookies = parseCookies(headersOf(req).get("cookie"));
    const r = path.endsWith("/start")
      ? await oidc.start(source)
      : await oidc.callback(query.slice(0, 8192), source, cookies);
    res.writeHead(303, { ...headers, location: r.location, "set-cookie": [...r.cookies] });
    res.end();
  }

  const server: Http2SecureServer = createSecureServer(
    {
      cert: o.tls.certPem,
      key: o.tls.keyPem,
      minVersion: o.tlsMinVersion,
      allowHTTP1: true,
      maxSessionMemory: o.limits.maxSessionMemoryMib,
      settings: { maxConcurrentStreams: o.limits.maxConcurrentStreams },
    },
    (req, res) => {
      const path = (req.url ?? "/").split("?")[0] ?? "/";
      if (path.startsWith("/rpc/")) {
        const headers = headersOf(req);
        if (!isPanelRequest(req.method, headers, originsOf(headers.get("host")))) {
          res.writeHead(403, { ...SECURITY_HEADERS, "content-type": "application/json" });
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
        onOidc(req, res, path).catch((err: unknown) => {
          o.logger.error({ err }, "panel sign-in request failed");
          if (!res.headersSent) res.writeHead(500);
          res.end();
        });
        return;
      }
      if (path.startsWith("/auth/")) {
        onAuth(req, res, path.slice("/auth/".length)).catch((err: unknown) => {
          o.logger.error({ err }, "panel auth request failed");
          if (!res.headersSent) res.writeHead(500);
          res.end();
        });
        return;
      }
      if (req.method !== "GET" && req.method !== "HEAD") {
        res.writeHead(405, SECURITY_HEADERS);
        res.end();
        return;
      }
      const asset = assets.get(path === "/" ? "/index.html" : path);
      if (asset === undefined) {
        res.writeHead(404, { ...SECURITY_HEADERS, "content-type": "text/plain" });
        res.end("not found");
        return;
      }
      res.writeHead(200, {
        ...SECURITY_HEADERS,
        "content-type": asset.type,
        "cache-control": path.endsWith(".html") || path === "/" ? "no-cache" : "max-age=300",
      });
      if (req.method === "HEAD") res.end();
      else res.end(asset.body);
    },
  );
  o.guard(server);
  const at = o.config.listen.lastIndexOf(":");
  const host = o.config.listen.slice(0, at).replace(/^\[|\]$/g, "");
  const listen = (port: number) =>
    new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.removeListener("error", reject);
        resolve();
      });
    });
  try {
    await listen(Number(o.config.listen.slice(at + 1)));
  } catch (err) {
    // Dev mode is for people (and tests running several dev daemons): a taken port is no reason to stop.
    if (o.devAdmin === undefined || (err as NodeJS.ErrnoException).code !== "EADDRINUSE") throw err;
    o.logger.warn(
      { listen: o.config.listen },
      "panel port in use; dev mode serves the panel on a free port",
    );
    await listen(0);
  }
  const addr = server.address();
  const port = typeof addr === "object" && addr !== null ? addr.port : 0;
  url = `https://${host.includes(":") ? `[${host}]` : host}:${port}/`;
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

function loadAssets(dir: string): Map<string, { type: string; body: Buffer }> {
  const out = new Map<string, { type: string; body: Buffer }>();
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) {
    const type = TYPES[extname(name)];
    if (type !== undefined) out.set(`/${name}`, { type, body: readFileSync(join(dir, name)) });
  }
  return out;
}

function readJson(req: Http2ServerRequest, max: number): Promise<unknown> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size <= max) chunks.push(c);
    });
    req.on("end", () => {
      if (size > max) return resolve("too-large");
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")));
      } catch {
        resolve(undefined);
      }
    });
    req.on("error", () => resolve(undefined));
  });
}

/** The OpenID Connect relying party, when `panel.oidc` is configured; reads its secret and CA files. */
function startOidc(o: PanelServerOptions, throttle: ReturnType<typeof createLoginThrottle>) {
  const c = o.config.oidc;
  if (c === undefined) return undefined;
  const read = (key: "clientSecretFile" | "caFile") => {
    const file = c[key];
    if (file === undefined) return undefined;
    if (!existsSync(file)) throw new ConfigError(`panel.oidc.${key}: file not found: ${file}`);
    return readFileSync(file, "utf8");
  };
  return createOidcSignIn({
    issuer: c.issuer,
    name: c.name,
    clientId: c.clientId,
    clientSecret: read("clientSecretFile")?.trim(),
    redirectUrl: c.redirectUrl,
    scopes: c.scopes,
    principalClaim: c.principalClaim,
    caPem: read("caFile"),
    sessions: o.sessions,
    throttle,
    policy: o.policy,
    audit: o.audit,
    logger: o.logger,
    now: () => o.clock.now(),
  });
}
