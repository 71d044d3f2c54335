import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readlinkSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { parseConfig, startDaemon } from "../src/server/index.js";

const listenOn = (port: number) =>
  new Promise<Server>((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve(server));
  });
const close = (server: Server) => new Promise<void>((resolve) => server.close(() => resolve()));
const portOf = (server: Server) => (server.address() as { port: number }).port;
const freePort = async () => {
  const s = await listenOn(0);
  const port = portOf(s);
  await close(s);
  return port;
};
/** Files under `dir` this process still holds open (Linux: /proc/self/fd). */
const openFilesUnder = (dir: string) =>
  readdirSync("/proc/self/fd").flatMap((fd) => {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      return target.startsWith(dir) ? [target] : [];
    } catch {
      return [];
    }
  });
const devConfig = (dir: string, grpcPort: number, extra: Record<string, unknown> = {}) =>
  parseConfig({
    dev: { enabled: true, dataDir: dir },
    listen: `127.0.0.1:${grpcPort}`,
    metrics: { enabled: true, listen: "127.0.0.1:0" },
    panel: { listen: "127.0.0.1:0" },
    log: { level: "silent" },
    ...extra,
  });

/** Asserts nothing `startDaemon` opened is left: files, the lock, the gRPC port. */
const assertNothingLeftOpen = async (dir: string, grpcPort: number) => {
  assert.deepEqual(openFilesUnder(dir), [], "files under the data directory still open");
  assert.equal(existsSync(join(dir, ".debvisor-rpcd.lock")), false, "data directory still locked");
  assert.equal(existsSync(join(dir, "state.db-wal")), false, "store not closed (WAL left)");
  await close(await listenOn(grpcPort)); // throws EADDRINUSE when the gRPC port is still bound
};

describe("startDaemon when start-up fails midway", () => {
  const dirs: string[] = [];
  const tempDir = () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-startfail-"));
    dirs.push(dir);
    return dir;
  };
  after(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it("closes everything it opened when the HTTP port is taken, so a second start on the same directory succeeds", async () => {
    const dir = tempDir();
    const grpcPort = await freePort();
    const taken = await listenOn(0);
    try {
      const config = devConfig(dir, grpcPort, {
        metrics: { enabled: true, listen: `127.0.0.1:${portOf(taken)}` },
      });
      await assert.rejects(startDaemon({ config }), /metrics\.listen/);
    } finally {
      await close(taken);
    }
    await assertNothingLeftOpen(dir, grpcPort);

    const daemon = await startDaemon({ config: devConfig(dir, grpcPort) });
    assert.equal(daemon.grpcAddress, `127.0.0.1:${grpcPort}`);
    await daemon.shutdown("test");
    // Shutdown unwinds the same stack.
    await assertNothingLeftOpen(dir, grpcPort);
  });

  it("closes the store, audit trail and simulation when the simulation's configuration is wrong", async () => {
    const dir = tempDir();
    const grpcPort = await freePort();
    const config = devConfig(dir, grpcPort, {
      simulation: { faults: [{ node: "no-such-node", kind: "kill", afterMs: 60_000 }] },
    });
    await assert.rejects(startDaemon({ config }), /no simulated node no-such-node/);
    await assertNothingLeftOpen(dir, grpcPort);
    const daemon = await startDaemon({ config: devConfig(dir, grpcPort) });
    await daemon.shutdown("test");
  });
});
