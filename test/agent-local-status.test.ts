import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createLocalSimulation, type LocalSimulation } from "../src/drivers/index.js";
import { loadCertificateAuthority } from "../src/pki/index.js";
import { agentStatus } from "./helpers/agent-status.js";
import { createTestPki } from "./helpers/pki.js";

/** Each file of `dir` with its size and modification time. */
const filesOf = (dir: string) =>
  readdirSync(dir)
    .sort()
    .map((f) => {
      const s = statSync(join(dir, f));
      return `${f} ${s.size} ${s.mtimeMs}`;
    });

describe("readLocalStatus beside a node's running simulation (in the test's process)", () => {
  let root: string;
  let nodeDir: string;
  let shared: string;
  let agent: LocalSimulation;
  const read = () => agentStatus(nodeDir, { sharedDir: shared });

  before(async () => {
    root = mkdtempSync(join(tmpdir(), "dv-local-status-"));
    nodeDir = join(root, "node-x");
    shared = join(root, "shared-storage");
    mkdirSync(nodeDir, { mode: 0o700 });
    const pki = await createTestPki();
    const issued = await (await loadCertificateAuthority(pki.ca)).issue({
      commonName: "node-x",
      usage: "client",
    });
    writeFileSync(join(nodeDir, "node.key"), issued.keyPem, { mode: 0o600 });
    writeFileSync(join(nodeDir, "node.crt"), issued.certPem);
    writeFileSync(join(nodeDir, "ca.crt"), pki.ca.certPem);
    // What the node's agent would hold open: its simulation, writing the node's files.
    agent = createLocalSimulation({
      nodeId: "node-x",
      dir: nodeDir,
      vms: 2,
      now: Date.now(),
      sharedDir: shared,
    });
  });
  after(() => {
    agent?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it("shows each change the node's simulation writes: nothing is kept from one read to the next", async () => {
    const first = await read();
    assert.equal(first.node, "node-x");
    assert.equal(first.driver, "simulation");
    assert.equal(first.domains.length, 2);
    const vm = first.domains[0]?.id ?? "";
    const signal = AbortSignal.timeout(10_000);
    for (const want of ["running", "stopped", "running"]) {
      if (want === "running") await agent.driver.start(vm, signal);
      else await agent.driver.stop(vm, { force: true, signal });
      const now = await read();
      assert.equal(now.domains.find((d) => d.id === vm)?.state, want);
    }
  });

  it("keeps no file open and writes nothing in the node's directory", async () => {
    await read();
    const fds = readdirSync("/proc/self/fd").length;
    const files = filesOf(nodeDir);
    for (let i = 0; i < 5; i++) await read();
    assert.equal(readdirSync("/proc/self/fd").length, fds, "as many open files as before");
    assert.deepEqual(filesOf(nodeDir), files);
  });
});
