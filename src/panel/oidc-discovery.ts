// Finding the OpenID Connect issuer's configuration (discovery) lazily, so a
// daemon starts while its issuer is down, and again after a failed attempt.

import * as client from "openid-client";
import { createIssuerFetch } from "./issuer-fetch.js";

/** What {@link createOidcDiscovery} needs: the issuer and this client's registration there. */
export interface OidcDiscoveryOptions {
  readonly issuer: string;
  readonly clientId: string;
  /** Undefined: a public client (PKCE alone). Never logged. */
  readonly clientSecret: string | undefined;
  /** PEM bundle trusted for the issuer's TLS; undefined: the system's. */
  readonly caPem: string | undefined;
}

/**
 * Returns the issuer's configuration, discovered on the first call and kept;
 * a failed discovery is forgotten, so the next call tries again.
 */
export function createOidcDiscovery(o: OidcDiscoveryOptions): () => Promise<client.Configuration> {
  const fetch = createIssuerFetch(o.caPem);
  let discovered: Promise<client.Configuration> | undefined;
  return () => {
    discovered ??= client
      .discovery(
        new URL(o.issuer),
        o.clientId,
        undefined,
        o.clientSecret === undefined ? client.None() : client.ClientSecretBasic(o.clientSecret),
        // The ID token's signature is checked against the issuer's JWKS even though it came over TLS.
        { execute: [client.enableNonRepudiationChecks], [client.customFetch]: fetch, timeout: 10 },
      )
      .catch((err: unknown) => {
        discovered = undefined;
        throw err;
      });
    return discovered;
  };
}
