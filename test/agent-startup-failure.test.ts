import assert from "node:assert/strict";
import { once } from "node:events";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { loadAgentConfig, runAgent } from "../src/agent/index.js";
import { loadCertificateAuthority } from "../src/pki/index.js";
import { startAgent } from "./helpers/agent-process.js";
import { createTestPki } from "./helpers/pki.js";

/**
 * Seen on a node whose operation journal could not be read: the agent
 * exited, but its agent.pid stayed behind, so a later `kill $(cat
 * agent.pid)` could signal whatever process reused that id; in-process,
 * its SIGTERM/SIGINT handlers and the faults watcher stayed installed.
 */
describe("an agent whose start-up fails after writing agent.pid", () => {
  let root: string;
  /** An enrolled agent directory for `node` (certificates from a test CA, no daemon needed). */
  let enrolledDir: (node: string) => Promise<string>;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), "dv-agent-startfail-"));
    const pki = await createTestPki();
    const issuer = await loadCertificateAuthority(pki.ca);
    enrolledDir = async (node) => {
      const dir = join(root, node);
      mkdirSync(dir, { recursive: true });
      const cert = await issuer.issue({ commonName: node, usage: "client" });
      writeFileSync(join(dir, "node.key"), cert.keyPem, { mode: 0o600 });
      writeFileSync(join(dir, "node.crt"), cert.certPem);
      writeFileSync(join(dir, "ca.crt"), pki.ca.certPem);
      return dir;
    };
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  /** A journal a newer agent wrote: this one cannot read it, and stops at start-up. */
  const unreadableJournal = (dir: string) =>
    writeFileSync(join(dir, "operations.json"), JSON.stringify({ version: 99, entries: [] }));
  // Nothing listens there: the agents here never get as far as connecting, or only try.
  const args = (dir: string) => ["--dir", dir, "--server", "127.0.0.1:9", "--driver", "sim"];

  it("exits leaving no agent.pid", async () => {
    const dir = await enrolledDir("node-fail");
    unreadableJournal(dir);
    const agent = startAgent(args(dir));
    const [code] = (await once(agent.proc, "exit")) as [number | null];
    assert.notEqual(code, 0);
    assert.equal(existsSync(join(dir, "agent.pid")), false, "a stale agent.pid was left");
  });

  it("removes its signal handlers and pid file in-process", async () => {
    const dir = await enrolledDir("node-inproc");
    unreadableJournal(dir);
    const listeners = () => process.listenerCount("SIGTERM") + process.listenerCount("SIGINT");
    const before = listeners();
    const config = loadAgentConfig({
      env: {},
      flags: { dir, servers: ["127.0.0.1:9"], driver: { kind: "sim" }, logLevel: "silent" },
    });
    await assert.rejects(runAgent(config, {}), /journal version/);
    assert.equal(listeners(), before, "SIGTERM/SIGINT handlers left installed");
    assert.equal(existsSync(join(dir, "agent.pid")), false, "a stale agent.pid was left");
  });

  it("on a normal stop removes agent.pid, unless another agent's id is in it now", async () => {
    for (const taken of [false, true]) {
      const dir = await enrolledDir(`node-stop-${taken}`);
      const agent = startAgent(args(dir));
      await agent.waitLog("agent running");
      const pidFile = join(dir, "agent.pid");
      assert.equal(readFileSync(pidFile, "utf8"), `${agent.proc.pid}\n`);
      // A later agent in the same directory wrote its own id: that file is not this one's to remove.
      if (taken) writeFileSync(pidFile, "4194303\n");
      const exited = once(agent.proc, "exit");
      agent.proc.kill("SIGTERM");
      assert.equal(((await exited) as [number | null])[0], 0);
      assert.equal(existsSync(pidFile), taken, taken ? "another agent's pid file removed" : "");
    }
  });
});
