// A small but real OpenID Connect issuer for tests, over HTTPS with its own
// test CA: discovery, JWKS, an authorization endpoint (code flow, PKCE S256
// required, the person already signed in) and a token endpoint (client
// secret, single-use codes). oidc-provider would be the well-kept choice, but
// its current major (9) refuses Node 20 at run time (it wants 22 LTS) and 8
// declares engines "18"; and the bad-input tests need an issuer that can be
// told to misbehave (a wrong nonce, audience, issuer, signature or expiry).
import { createHash, generateKeyPairSync, randomBytes } from "node:crypto";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { exportJWK, type JWK, SignJWT } from "jose";
import { createTestPki } from "./pki.js";

/** How the issuer misbehaves on the next sign-in (then it is good again). */
export type Misbehaviour =
  | "error"
  | "wrong-nonce"
  | "wrong-audience"
  | "wrong-issuer"
  | "bad-signature"
  | "expired";

/** A running test issuer. */
export interface TestIssuer {
  /** https://127.0.0.1:PORT, also its `iss`. */
  readonly url: string;
  /** The CA its TLS certificate chains to. */
  readonly caPem: string;
  readonly clientId: string;
  readonly clientSecret: string;
  /** The one redirect URI registered for the client. */
  redirectUrl: string;
  /** Claims of the person signed in at the issuer (at least `sub`). */
  user: Record<string, unknown>;
  misbehave: Misbehaviour | undefined;
  /** Token requests answered, good or refused. */
  readonly tokenRequests: number;
  close(): Promise<void>;
}

interface Grant {
  readonly challenge: string;
  readonly nonce: string;
  readonly redirectUri: string;
  readonly user: Record<string, unknown>;
  readonly misbehave: Misbehaviour | undefined;
  used: boolean;
}

const b64url = (b: Buffer) => b.toString("base64url");

/** Starts the issuer on 127.0.0.1 (a free port). */
export async function startTestIssuer(): Promise<TestIssuer> {
  const pki = await createTestPki();
  const key = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const stranger = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const jwk: JWK = { ...(await exportJWK(key.publicKey)), kid: "k1", alg: "ES256", use: "sig" };
  const grants = new Map<string, Grant>();
  let tokenRequests = 0;
  const send = (res: import("node:http").ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
    res.end(JSON.stringify(body));
  };
  const state: TestIssuer = {
    url: "",
    caPem: pki.ca.certPem,
    clientId: "debvisor-panel",
    clientSecret: b64url(randomBytes(24)),
    redirectUrl: "",
    user: { sub: "alice" },
    misbehave: undefined,
    get tokenRequests() {
      return tokenRequests;
    },
    close: () =>
      new Promise((r) => {
        server.close(() => r());
        // Idle keep-alive connections (clients' global agents) would hold close() up for seconds.
        server.closeAllConnections();
      }),
  };

  async function idToken(g: Grant): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    const bad = g.misbehave;
    const exp = bad === "expired" ? now - 600 : now + 300;
    return new SignJWT({ ...g.user, nonce: bad === "wrong-nonce" ? "not-your-nonce" : g.nonce })
      .setProtectedHeader({ alg: "ES256", kid: "k1" })
      .setIssuer(bad === "wrong-issuer" ? "https://evil.example" : state.url)
      .setAudience(bad === "wrong-audience" ? "some-other-client" : state.clientId)
      .setIssuedAt(exp - 300)
      .setExpirationTime(exp)
      .sign(bad === "bad-signature" ? stranger.privateKey : key.privateKey);
  }

  function authorize(url: URL, res: import("node:http").ServerResponse) {
    const p = url.searchParams;
    const redirectUri = p.get("redirect_uri") ?? "";
    // Never redirect to an unregistered address (no open redirector here either).
    if (p.get("client_id") !== state.clientId || redirectUri !== state.redirectUrl)
      return send(res, 400, { error: "invalid_request", error_description: "unknown client" });
    const back = new URL(redirectUri);
    back.searchParams.set("state", p.get("state") ?? "");
    back.searchParams.set("iss", state.url);
    const misbehave = state.misbehave;
    state.misbehave = undefined;
    if (misbehave === "error") back.searchParams.set("error", "access_denied");
    else if (
      p.get("response_type") !== "code" ||
      p.get("code_challenge_method") !== "S256" ||
      (p.get("code_challenge") ?? "").length < 43
    )
      back.searchParams.set("error", "invalid_request");
    else {
      const code = b64url(randomBytes(24));
      grants.set(code, {
        challenge: p.get("code_challenge") ?? "",
        nonce: p.get("nonce") ?? "",
        redirectUri,
        user: { ...state.user },
        misbehave,
        used: false,
      });
      back.searchParams.set("code", code);
    }
    res.writeHead(302, { location: back.href });
    res.end();
  }

  async function token(body: URLSearchParams, authorization: string | undefined) {
    tokenRequests++;
    // RFC 6749 2.3.1: id and secret are form-urlencoded before base64.
    const [id, secret] = Buffer.from((authorization ?? "").replace(/^Basic /, ""), "base64")
      .toString()
      .split(":")
      .map((v) => decodeURIComponent(v.replace(/\+/g, " ")));
    if (id !== state.clientId || secret !== state.clientSecret)
      return [401, { error: "invalid_client" }] as const;
    const g = grants.get(body.get("code") ?? "");
    if (body.get("grant_type") !== "authorization_code" || g === undefined)
      return [400, { error: "invalid_grant" }] as const;
    if (g.used) return [400, { error: "invalid_grant", error_description: "code used" }] as const;
    g.used = true;
    const challenge = b64url(
      createHash("sha256")
        .update(body.get("code_verifier") ?? "")
        .digest(),
    );
    if (challenge !== g.challenge || body.get("redirect_uri") !== g.redirectUri)
      return [400, { error: "invalid_grant", error_description: "PKCE or redirect" }] as const;
    return [
      200,
      {
        access_token: b64url(randomBytes(24)),
        token_type: "Bearer",
        expires_in: 300,
        id_token: await idToken(g),
      },
    ] as const;
  }

  const server: Server = createServer(
    { cert: pki.server.certPem, key: pki.server.keyPem },
    (req, res) => {
      const url = new URL(req.url ?? "/", state.url);
      if (url.pathname === "/.well-known/openid-configuration")
        return send(res, 200, {
          issuer: state.url,
          authorization_endpoint: `${state.url}/authorize`,
          token_endpoint: `${state.url}/token`,
          jwks_uri: `${state.url}/jwks`,
          response_types_supported: ["code"],
          subject_types_supported: ["public"],
          id_token_signing_alg_values_supported: ["ES256"],
          code_challenge_methods_supported: ["S256"],
          token_endpoint_auth_methods_supported: ["client_secret_basic"],
          authorization_response_iss_parameter_supported: true,
        });
      if (url.pathname === "/jwks") return send(res, 200, { keys: [jwk] });
      if (url.pathname === "/authorize" && req.method === "GET") return authorize(url, res);
      if (url.pathname === "/token" && req.method === "POST") {
        let text = "";
        req.on("data", (d: Buffer) => {
          text += d.toString();
        });
        req.on("end", () => {
          token(new URLSearchParams(text), req.headers.authorization).then(
            ([status, body]) => send(res, status, body),
            (err: unknown) => send(res, 500, { error: String(err) }),
          );
        });
        return;
      }
      send(res, 404, { error: "not_found" });
    },
  );
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  (state as { url: string }).url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return state;
}
