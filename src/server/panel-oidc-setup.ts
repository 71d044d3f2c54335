// Building the panel's OpenID Connect relying party from `panel.oidc`,
// reading its client secret and CA files.

import { existsSync, readFileSync } from "node:fs";
import type { Clock, Logger } from "../core/index.js";
import {
  createOidcSignIn,
  type LoginThrottle,
  type OidcSignIn,
  type PanelAuditSink,
  type PanelSessions,
} from "../panel/index.js";
import type { AccessPolicy } from "../security/index.js";
import { ConfigError } from "./config-loader.js";
import type { Config } from "./config-schema.js";

/** What {@link startPanelOidc} needs: the panel's configuration and the parts the sign-in shares with it. */
export interface PanelOidcSetup {
  readonly config: Config["panel"];
  readonly sessions: PanelSessions;
  readonly throttle: LoginThrottle;
  readonly policy: () => AccessPolicy;
  readonly audit: PanelAuditSink | undefined;
  readonly logger: Logger;
  readonly clock: Clock;
}

/**
 * The OpenID Connect relying party, when `panel.oidc` is configured; reads its
 * secret and CA files (a missing one is a ConfigError naming its key).
 */
export function startPanelOidc(o: PanelOidcSetup): OidcSignIn | undefined {
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
    throttle: o.throttle,
    policy: o.policy,
    audit: o.audit,
    logger: o.logger,
    now: () => o.clock.now(),
  });
}
