import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { silentLogger } from "../src/core/index.js";
import { createEtcdStore, createSqliteStore } from "../src/store/index.js";
import { type EtcdServer, startEtcd } from "./helpers/etcd-server.js";
import { IN_CI } from "./helpers/required-tools.js";
import { storeConformance } from "./helpers/store-conformance.js";

storeConformance("sqlite", async () =>
  createSqliteStore({
    path: join(mkdtempSync(join(tmpdir(), "dv-store-")), "state.db"),
    logger: silentLogger,
    leaseSweepMs: 100,
  }),
);

let etcd: EtcdServer | undefined;
const etcdAvailable = await startEtcd().then(
  (server) => {
    etcd = server;
    return server !== undefined;
  },
  (err: unknown) => {
    if (IN_CI) throw err;
    console.error(`etcd failed to start: ${(err as Error).message}`);
    return false;
  },
);
if (etcdAvailable && etcd !== undefined) {
  const server = etcd;
  storeConformance(
    "etcd",
    async () =>
      createEtcdStore({
        endpoints: [server.endpoint],
        prefix: `/conformance-${randomBytes(4).toString("hex")}/`,
      }),
    () => server.stop(),
  );
} else {
  const banner = "!".repeat(78);
  console.log(
    `${banner}\n!!! etcd is not installed: the etcd backend's conformance tests are SKIPPED.\n!!! Install it with: apt-get install etcd-server (.ci/run does this).\n${banner}`,
  );
}
