// Everything the scenarios share, made once per run in a temporary folder:
// a CA; server certificates with ECDSA P-256 and RSA-4096 keys; a client
// certificate for mTLS; an ES256 key pair and a token signed with it; a
// state store with 10 registered, heartbeating nodes and a viewer API key;
// and the daemon configuration files (JSON, which is YAML too).
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { exportSPKI, generateKeyPair, SignJWT } from "jose";
import { createInventory } from "../src/cluster/index.js";
import { type Clock, silentLogger, systemClock } from "../src/core/index.js";
import { HealthSchema, NodeInfoSchema } from "../src/gen/debvisor/v1/node_pb.js";
import {
  type CertifiedKey,
  createCertificateAuthority,
  loadCertificateAuthority,
} from "../src/pki/index.js";
import { createApiKeys } from "../src/security/index.js";
import { createSqliteStore } from "../src/store/index.js";

/** The principal of the mTLS client certificate (bound to viewer in every config). */
export const MTLS_PRINCIPAL = "bench-mtls";
const JWT_ISSUER = "bench-issuer";
/** Rate limits generous enough never to refuse a benchmark call, while the stages still run. */
const UNLIMITED = { ratePerSecond: 1_000_000, burst: 10_000_000 };

/** Which security stages a daemon runs. */
export interface DaemonVariant {
  readonly audit: boolean;
  readonly rateLimit: boolean;
  readonly authorization: boolean;
  /** Server key: ECDSA P-256 (default) or RSA-4096. */
  readonly serverKey?: "ecdsa" | "rsa";
}

/** The full pipeline: API key or JWT or mTLS, RBAC, rate limits, validation, durable audit. */
export const FULL: DaemonVariant = { audit: true, rateLimit: true, authorization: true };

/** Shared material of one benchmark run. */
export interface BenchFixture {
  readonly dir: string;
  readonly caPem: string;
  readonly caFile: string;
  readonly ecdsa: { readonly cert: string; readonly key: string };
  readonly rsa: { readonly cert: string; readonly key: string };
  readonly mtlsClient: CertifiedKey;
  /** A viewer API key in the read store. */
  readonly apiKey: string;
  /** An ES256 JWT for a viewer, valid for the run. */
  readonly jwt: string;
  /** A store with the 10 nodes and the viewer key. */
  readonly readStore: string;
  /**
   * Writes a daemon configuration named `name` whose store is a copy of
   * `store` (default: the read store); returns the file.
   */
  daemonConfig(name: string, variant: DaemonVariant, store?: string): string;
}

/** Makes the fixture in `dir`. */
export async function createBenchFixture(dir: string): Promise<BenchFixture> {
  mkdirSync(dir, { recursive: true });
  const ca = await createCertificateAuthority({ commonName: "Bench CA" });
  const issuer = await loadCertificateAuthority(ca);
  const server = (algorithm: "ecdsa-p256" | "rsa-4096") =>
    issuer.issue({
      commonName: "localhost",
      usage: "server",
      altNames: ["localhost", "127.0.0.1"],
      algorithm,
    });
  const write = (file: string, text: string) => {
    writeFileSync(join(dir, file), text, { mode: 0o600 });
    return join(dir, file);
  };
  const pair = async (name: string, c: CertifiedKey) => ({
    cert: write(`${name}.crt`, c.certPem),
    key: write(`${name}.key`, c.keyPem),
  });
  const ecdsa = await pair("server-ecdsa", await server("ecdsa-p256"));
  const rsa = await pair("server-rsa4096", await server("rsa-4096"));
  const mtlsClient = await issuer.issue({ commonName: MTLS_PRINCIPAL, usage: "client" });
  const caFile = write("ca.crt", ca.certPem);

  const jwtKeys = await generateKeyPair("ES256");
  const jwtPublicKey = write("jwt-es256.pub", await exportSPKI(jwtKeys.publicKey));
  const jwt = await new SignJWT({ roles: ["viewer"] })
    .setProtectedHeader({ alg: "ES256" })
    .setIssuer(JWT_ISSUER)
    .setAudience("debvisor-rpc")
    .setSubject("bench-jwt")
    .setIssuedAt()
    .setExpirationTime("3h")
    .sign(jwtKeys.privateKey);

  const readStore = join(dir, "read-state.db");
  const apiKey = await seedStore(readStore, 10, systemClock);

  return {
    dir,
    caPem: ca.certPem,
    caFile,
    ecdsa,
    rsa,
    mtlsClient,
    apiKey: apiKey.viewer,
    jwt,
    readStore,
    daemonConfig(name, variant, store = readStore) {
      const home = join(dir, name);
      mkdirSync(home, { recursive: true });
      const statePath = join(home, "state.db");
      copyStore(store, statePath);
      const tls = variant.serverKey === "rsa" ? rsa : ecdsa;
      const config = {
        listen: "127.0.0.1:0",
        tls: { cert: tls.cert, key: tls.key, clientCa: caFile },
        log: { level: "info" },
        metrics: { enabled: true, listen: "127.0.0.1:0" },
        store: { path: statePath },
        audit: { enabled: variant.audit, path: join(home, "audit.log") },
        auth: {
          jwt: {
            issuers: [{ issuer: JWT_ISSUER, algorithms: ["ES256"], publicKeys: [jwtPublicKey] }],
          },
        },
        rbac: { bindings: [{ principal: MTLS_PRINCIPAL, roles: ["viewer"] }] },
        rateLimit: { perSource: UNLIMITED, perPrincipal: UNLIMITED },
        benchmark: {
          skipRateLimit: !variant.rateLimit,
          skipAuthorization: !variant.authorization,
        },
      };
      return write(`${name}.yaml`, `${JSON.stringify(config, null, 2)}\n`);
    },
  };
}

/** Copies a closed SQLite store (and its WAL, if one was left). */
function copyStore(from: string, to: string): void {
  copyFileSync(from, to);
  if (existsSync(`${from}-wal`)) copyFileSync(`${from}-wal`, `${to}-wal`);
}

/** Node id `n` of `count`: node-01 ... node-10, node-0001 ... node-1000. */
export function nodeId(n: number, count: number): string {
  return `node-${String(n).padStart(String(count).length, "0")}`;
}

/**
 * Registers `count` nodes, each with one heartbeat, and makes a viewer API
 * key; with `nodeKeys`, also one key per node (role node: its own node only).
 */
export async function seedStore(
  path: string,
  count: number,
  clock: Clock,
  nodeKeys = false,
): Promise<{ viewer: string; nodes: { id: string; token: string }[] }> {
  const store = createSqliteStore({ path, logger: silentLogger });
  try {
    const inventory = createInventory({ store, clock });
    const apiKeys = createApiKeys(store, clock);
    const ids = Array.from({ length: count }, (_, i) => nodeId(i + 1, count));
    // Concurrent writes share transactions and fsyncs, so 1,000 nodes take moments.
    await Promise.all(
      ids.map(async (id, i) => {
        await inventory.register(
          create(NodeInfoSchema, {
            id: { id },
            hostname: `hv${i + 1}.bench`,
            zone: `z${(i % 3) + 1}`,
            labels: { rack: `r${(i % 4) + 1}` },
          }),
          id,
        );
        await inventory.heartbeat(
          create(HealthSchema, {
            nodeId: { id },
            cpuLoad: 1.5,
            memUsedPct: 40,
            diskUsedPct: 55,
            netRttMs: 0.4,
            timestamp: { seconds: BigInt(Math.floor(clock.now() / 1000)) },
          }),
        );
      }),
    );
    const viewer = await apiKeys.create({
      principal: "bench-viewer",
      roles: ["viewer"],
      createdBy: "bench",
    });
    const nodes = nodeKeys
      ? await Promise.all(
          ids.map(async (id) => {
            const k = await apiKeys.create({ principal: id, roles: ["node"], createdBy: "bench" });
            return { id, token: k.token };
          }),
        )
      : [];
    return { viewer: viewer.token, nodes };
  } finally {
    await store.close();
  }
}
