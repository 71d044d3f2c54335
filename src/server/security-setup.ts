import { readFileSync } from "node:fs";
import { followLiveServingSerials } from "../cluster/index.js";
import type { Clock, Logger, OpenedResources } from "../core/index.js";
import { createPanelSessions, type PanelSessions } from "../panel/index.js";
import type { CertificateAuthority } from "../pki/index.js";
import {
  type AccessPolicy,
  type ApiKeys,
  type Binding,
  type CertificateLedger,
  createCertificateLedger,
  createLockout,
  createRateLimitStages,
  followRevokedServerCertificates,
  type JwtVerifier,
  type Lockout,
  loadApiKeys,
  loadRevocations,
  loadStoredBindings,
  loadStoredRoles,
  type Revocations,
  type RevokedServerCertificates,
  type StoredBindings,
  type StoredRoles,
} from "../security/index.js";
import type { KvStore } from "../store/index.js";
import { jwtVerifierFromConfig, policyFromConfig } from "./access-config.js";
import { loadClusterCa } from "./cluster-ca.js";
import type { Config } from "./config-schema.js";
import type { DevEnvironment } from "./dev-environment.js";

/** What the security part needs from the daemon. */
export interface SecuritySetup {
  readonly config: Config;
  readonly store: KvStore;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly dev: DevEnvironment | undefined;
  readonly resources: OpenedResources;
  /** The serial of the server certificate this daemon serves now (never told to its agents as revoked). */
  readonly servingSerial: () => string | undefined;
}

/** The daemon's security state: keys, bindings, roles, revocations, the CA and the policy in force. */
export interface DaemonSecurity {
  readonly apiKeys: ApiKeys;
  readonly storedBindings: StoredBindings;
  readonly revocations: Revocations;
  readonly storedRoles: StoredRoles;
  readonly ca: CertificateAuthority | undefined;
  readonly ledger: CertificateLedger;
  /** The revoked, unexpired server certificates agents are told to refuse. */
  readonly revokedServers: RevokedServerCertificates;
  readonly panelSessions: PanelSessions | undefined;
  readonly lockout: Lockout;
  readonly rateLimits: ReturnType<typeof createRateLimitStages>;
  /** The policy in force: the config's roles and bindings plus those set through the API. */
  policy(): AccessPolicy;
  /** Tells `listener` after each change of the policy in force. */
  onPolicyChange(listener: () => void): () => void;
  /** Tells `listener` after each configuration reload is put in force (issuers may have changed). */
  onReload(listener: () => void): () => void;
  /** The configured JWT verifier, if any. */
  jwt(): JwtVerifier | undefined;
  /** Checks `next`'s access settings; the returned function puts them in force. Throws when wrong. */
  prepareReload(next: Config): () => void;
}

/**
 * Loads the security state from the store (each mirror's watch is closed on
 * unwind), the cluster CA and the panel's sessions.
 */
export async function setUpSecurity(setup: SecuritySetup): Promise<DaemonSecurity> {
  const { config, store, clock, logger, dev, resources } = setup;
  const apiKeys = await loadApiKeys(store, clock, logger);
  resources.push("API keys", () => apiKeys.close());
  // Dev mode's admin certificate administers security and operates the cluster.
  const devBindings: Binding[] =
    dev === undefined
      ? []
      : [
          { principal: "admin", roles: ["admin", "operator"] },
          // The panel's dev-mode user admin (principal user:admin) may do as much.
          { principal: "user:admin", roles: ["admin", "operator"] },
        ];
  let configPolicy: AccessPolicy = policyFromConfig(config, devBindings);
  const storedBindings = await loadStoredBindings(store, clock, logger);
  resources.push("stored bindings", () => storedBindings.close());
  const revocations = await loadRevocations(store, clock, logger);
  resources.push("revocations", () => revocations.close());
  const storedRoles = await loadStoredRoles(store, clock, logger);
  resources.push("stored roles", () => storedRoles.close());
  const ca = await loadClusterCa(config, dev);
  const ledger = createCertificateLedger(store, clock);
  // Certificates made outside the RPC are recorded too, so their renewals chain to them.
  if (dev !== undefined) {
    for (const [file, kind] of [
      [dev.adminCert, "client"],
      [dev.serverCert, "server"],
    ] as const)
      await ledger.record(readFileSync(file, "utf8"), { issuedBy: "dev-mode", kind });
  }
  // The certificates the other live daemons serve (their runner keys): never told as revoked.
  const liveServing = await followLiveServingSerials(store, logger);
  resources.push("live serving serials", () => liveServing.close());
  const revokedServers = await followRevokedServerCertificates({
    revocations,
    ledger,
    clock,
    logger,
    serving: setup.servingSerial,
    liveServing: () => liveServing.serials(),
  });
  resources.push("revoked server certificates", () => revokedServers.close());
  liveServing.onChange(() => revokedServers.refresh());
  let policy: AccessPolicy = configPolicy;
  const rebuildPolicy = () => {
    // Stored roles never shadow built-in or config-file roles.
    const roles = new Map(configPolicy.roles);
    for (const r of storedRoles.all()) {
      if (!roles.has(r.name))
        roles.set(
          r.name,
          Object.freeze({ name: r.name, grants: Object.freeze([...r.grants]), builtIn: false }),
        );
    }
    policy = Object.freeze({
      roles,
      bindings: [
        ...configPolicy.bindings,
        ...storedBindings
          .all()
          .map((b) => ({ principal: b.principal, roles: b.roles, tenant: b.tenant || undefined })),
      ],
    });
  };
  const policyListeners = new Set<() => void>();
  const reloadListeners = new Set<() => void>();
  const changed = () => {
    rebuildPolicy();
    for (const l of [...policyListeners]) l();
  };
  storedBindings.onChange(changed);
  storedRoles.onChange(changed);
  rebuildPolicy();
  let jwt = jwtVerifierFromConfig(config, clock);
  const panelSessions =
    (config.panel.enabled ?? config.dev.enabled)
      ? await createPanelSessions({
          store,
          clock,
          accessTtlMs: config.panel.accessTtlMs,
          sessionTtlMs: config.panel.sessionTtlMs,
          maxSessionsPerUser: config.panel.maxSessionsPerUser,
        })
      : undefined;
  const lockout = createLockout({ clock, ...config.auth.lockout });
  const rateLimits = createRateLimitStages({ clock, ...config.rateLimit, policy: () => policy });
  return {
    apiKeys,
    storedBindings,
    revocations,
    storedRoles,
    ca,
    ledger,
    revokedServers,
    panelSessions,
    lockout,
    rateLimits,
    policy: () => policy,
    onPolicyChange(listener) {
      policyListeners.add(listener);
      return () => policyListeners.delete(listener);
    },
    onReload(listener) {
      reloadListeners.add(listener);
      return () => reloadListeners.delete(listener);
    },
    jwt: () => jwt,
    prepareReload(next) {
      const nextPolicy = policyFromConfig(next, devBindings);
      const nextJwt = jwtVerifierFromConfig(next, clock);
      return () => {
        configPolicy = nextPolicy;
        // The verifier first: streams verify their tokens again on the reload.
        jwt = nextJwt;
        changed();
        for (const l of [...reloadListeners]) l();
      };
    },
  };
}
