import { existsSync, readFileSync } from "node:fs";
import type { Clock } from "../core/index.js";
import {
  type AccessPolicy,
  type Binding,
  createAccessPolicy,
  createJwtVerifier,
  type JwtVerifier,
} from "../security/index.js";
import { ConfigError } from "./config-loader.js";
import type { Config } from "./config-schema.js";

/** The access policy the configuration describes; `extra` bindings (dev mode's admin) are added. */
export function policyFromConfig(config: Config, extra: readonly Binding[] = []): AccessPolicy {
  let policy: AccessPolicy;
  try {
    policy = createAccessPolicy({
      roles: config.rbac.roles,
      bindings: [...config.rbac.bindings, ...extra],
    });
  } catch (err) {
    throw new ConfigError(`rbac.roles: ${(err as Error).message}`);
  }
  config.rbac.bindings.forEach((b, i) => {
    for (const r of b.roles) {
      if (!policy.roles.has(r))
        throw new ConfigError(`rbac.bindings.${i}.roles: unknown role ${r}`);
    }
  });
  return policy;
}

/** The JWT verifier for the configured issuers, or undefined when there are none. */
export function jwtVerifierFromConfig(config: Config, clock: Clock): JwtVerifier | undefined {
  const issuers = config.auth.jwt.issuers;
  if (issuers.length === 0) return undefined;
  return createJwtVerifier(
    issuers.map((i, n) => {
      const at = `auth.jwt.issuers.${n}`;
      const read = (key: string, p: string) => {
        if (!existsSync(p)) throw new ConfigError(`${at}.${key}: file not found: ${p}`);
        return readFileSync(p, "utf8");
      };
      const publicKeyPems = i.publicKeys.map((p, k) => read(`publicKeys.${k}`, p));
      let jwks: { keys: Record<string, unknown>[] } | undefined;
      if (i.jwksFile !== undefined) {
        try {
          jwks = JSON.parse(read("jwksFile", i.jwksFile)) as { keys: Record<string, unknown>[] };
        } catch (err) {
          throw new ConfigError(`${at}.jwksFile: not a JWKS: ${(err as Error).message}`);
        }
        if (!Array.isArray(jwks?.keys)) throw new ConfigError(`${at}.jwksFile: no "keys" array`);
      }
      if (publicKeyPems.length === 0 && jwks === undefined)
        throw new ConfigError(`${at}: publicKeys or jwksFile required`);
      return { ...i, publicKeyPems, jwks: jwks as never };
    }),
    clock,
  );
}
