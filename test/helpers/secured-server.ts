import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  createDomainServices,
  createInventory,
  createTargetResolvers,
} from "../../src/cluster/index.js";
import { type Clock, silentLogger, validationStage } from "../../src/core/index.js";
import type { StorageDriver } from "../../src/drivers/index.js";
import {
  type AccessPolicy,
  type ApiKeys,
  apiKeyResolver,
  type BucketLimit,
  createApiKeys,
  createAuthenticationStage,
  createAuthorizationStage,
  createLockout,
  createRateLimitStages,
  type JwtVerifier,
  loadRevocations,
  type Revocations,
} from "../../src/security/index.js";
import { parseConfig, type RpcServer, startRpcServer } from "../../src/server/index.js";
import { createSqliteStore, type KvStore } from "../../src/store/index.js";
import type { TestPki } from "./pki.js";

/** A TLS server with the full authentication and authorization pipeline over the domain services. */
export interface SecuredServer {
  readonly server: RpcServer;
  readonly apiKeys: ApiKeys;
  readonly store: KvStore;
  readonly revocations: Revocations;
  close(): Promise<void>;
}

/** Starts one on a free loopback port. */
export async function startSecuredServer(options: {
  pki: TestPki;
  clock: Clock;
  policy: AccessPolicy;
  jwt?: JwtVerifier;
  lockout?: {
    maxFailures: number;
    windowMs: number;
    sourceMaxFailures?: number;
    throttleDelayMs?: number;
  };
  storage?: StorageDriver;
  rateLimit?: { perSource: BucketLimit; perPrincipal: BucketLimit };
}): Promise<SecuredServer> {
  const store = createSqliteStore({
    path: join(mkdtempSync(join(tmpdir(), "dv-sec-")), "state.db"),
    logger: silentLogger,
  });
  const apiKeys = createApiKeys(store, options.clock);
  const revocations = await loadRevocations(store, options.clock, silentLogger);
  const inventory = createInventory({ store, clock: options.clock });
  const config = parseConfig({});
  const generous = { ratePerSecond: 1_000_000, burst: 1_000_000 };
  const rateLimits = createRateLimitStages({
    clock: options.clock,
    perSource: options.rateLimit?.perSource ?? generous,
    perPrincipal: options.rateLimit?.perPrincipal ?? generous,
    perRole: {},
    methodCost: {},
    policy: () => options.policy,
  });
  const server = await startRpcServer({
    listen: "127.0.0.1:0",
    tls: {
      certPem: options.pki.server.certPem,
      keyPem: options.pki.server.keyPem,
      clientCaPem: options.pki.ca.certPem,
    },
    tlsOptions: config.tls,
    limits: config.limits,
    services: createDomainServices({
      inventory,
      storage: options.storage ?? { listSnapshots: async () => undefined },
      store,
      clock: options.clock,
      policyTenants: () =>
        options.policy.bindings.flatMap((b) => (b.tenant === undefined ? [] : [b.tenant])),
    }),
    stages: [
      rateLimits.perSource,
      createAuthenticationStage({
        apiKeys,
        jwt: () => options.jwt,
        revocations,
        lockout: createLockout({
          clock: options.clock,
          ...(options.lockout ?? { maxFailures: 1000, windowMs: 60_000 }),
        }),
      }),
      createAuthorizationStage(() => options.policy, {
        ...createTargetResolvers({ inventory, store }),
        apikey: apiKeyResolver(apiKeys),
      }),
      rateLimits.perPrincipal,
      validationStage,
    ],
    observer: { onStart() {}, onEnd() {} },
    logger: silentLogger,
  });
  return {
    server,
    apiKeys,
    store,
    revocations,
    async close() {
      await server.shutdown(1000);
      revocations.close();
      await store.close();
    },
  };
}
