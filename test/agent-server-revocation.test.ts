// Agents refuse a control plane presenting a revoked server certificate: a
// stolen server certificate and key no longer pass as the control plane to
// agents once revoked (docs/security.md). The daemon tells its agents which
// server certificates are revoked; an agent keeps that list in its
// directory and checks every server it connects to against it. A daemon
// whose own certificate is revoked renews it at once, and keeps its agents.
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { hideIpSniWarning } from "../src/client/index.js";
import type { ControlMessage } from "../src/gen/debvisor/v1/agent_pb.js";
import type { RpcServer } from "../src/server/index.js";
import { type AgentProcess, enrollAgent, startAgent } from "./helpers/agent-process.js";
import { startAgentServiceServer } from "./helpers/agent-service-server.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";
import { hvctlInProcess } from "./helpers/hvctl-in-process.js";
import type { TestPki } from "./helpers/pki.js";

hideIpSniWarning();

const CONNECTED = "connected to the control plane";
const REFUSED = "refused the control plane: its certificate is revoked";
/** Serials as the agent logs them: lower-case hex without leading zeros. */
const serialKey = (pem: string) =>
  new X509Certificate(pem).serialNumber.toLowerCase().replace(/^0+(?=.)/, "");

describe("agents and a revoked server certificate", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let agentDir: string;
  /** The daemon's first certificate and key, as a thief would hold them. */
  let stolen: { certPem: string; keyPem: string };
  let rogue: RpcServer;
  /** What the rogue server was sent on any AgentService.Connect stream. */
  const sentToRogue: unknown[] = [];
  const agents: AgentProcess[] = [];
  const hvctl = (...args: string[]) => hvctlInProcess(join(dir, "hvctl.yaml"), ...args);
  const run = (...servers: string[]) => {
    const a = startAgent([
      "--dir",
      agentDir,
      ...servers.flatMap((s) => ["--server", s]),
      "--tls-server-name",
      "localhost",
      "--driver",
      "sim",
      "--sim-vms",
      "1",
    ]);
    agents.push(a);
    return a;
  };
  /**
   * The agent's log line refusing `server`'s certificate as revoked (from
   * its `since`th line), once the agent has refused it or sent it anything;
   * the rogue server must have been sent nothing.
   */
  const refusedBy = async (a: AgentProcess, server: string, since = 0) => {
    const hit = await eventually(
      () => {
        const line = a.logs.slice(since).find((l) => l.msg === REFUSED && l.server === server);
        assert.ok(line !== undefined || sentToRogue.length > 0, `the agent never tried ${server}`);
        return line;
      },
      { timeoutMs: 20_000, intervalMs: 100 },
    );
    assert.deepEqual(sentToRogue, [], "the agent sent the rogue server its Hello");
    assert.ok(hit, "no log line says why the server was refused");
    return hit;
  };
  const stop = async (a: AgentProcess) => {
    if (a.proc.exitCode !== null) return;
    const exited = once(a.proc, "exit");
    a.proc.kill("SIGTERM");
    await exited;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-agent-revoked-server-"));
    daemon = await startDevDaemon(dir, {
      simulation: { enabled: false },
      cluster: { heartbeatIntervalMs: 1000 },
    });
    stolen = {
      certPem: readFileSync(join(dir, "pki", "server.crt"), "utf8"),
      keyPem: readFileSync(join(dir, "pki", "server.key"), "utf8"),
    };
    agentDir = await enrollAgent(hvctl, daemon.grpcAddress, dir, "node-a");
    // A thief's control plane: the stolen certificate and key, the cluster CA for the agents'
    // client certificates; it records whatever an agent sends it and answers nothing.
    const pki = {
      ca: { certPem: readFileSync(join(dir, "pki", "ca.crt"), "utf8"), keyPem: "" },
      server: stolen,
    } as unknown as TestPki;
    rogue = await startAgentServiceServer(pki, async function* (requests) {
      for await (const m of requests) sentToRogue.push(m);
      yield* [] as ControlMessage[];
    });
  });
  after(async () => {
    for (const a of agents) a.proc.kill("SIGKILL");
    daemon?.kill();
    await rogue?.shutdown(0).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  it("a daemon whose certificate is revoked renews it at once, and its agent reconnects to the new one", async () => {
    // The rogue server is second: the agent goes there only once the daemon is gone (below).
    const a = run(daemon.grpcAddress, rogue.address);
    const first = await a.waitLog(CONNECTED);
    assert.equal(first.serverCertificate, serialKey(stolen.certPem));
    const r = await hvctl("cert", "revoke", serialKey(stolen.certPem), "--reason", "stolen");
    assert.equal(r.code, 0, r.stderr);
    const again = await eventually(
      () => {
        const hit = a.logs.find(
          (l) => l.msg === CONNECTED && l.serverCertificate !== serialKey(stolen.certPem),
        );
        assert.ok(hit, "the agent never connected to a renewed certificate");
        return hit;
      },
      { timeoutMs: 20_000, intervalMs: 100 },
    );
    assert.equal(
      again.serverCertificate,
      serialKey(readFileSync(join(dir, "pki", "server.crt"), "utf8")),
    );
  });

  it("a daemon whose files are put back to the revoked certificate (a backup restored) renews it again at once", async () => {
    // Found by an adversarial review: the renewal at once followed revocations only; a revoked
    // certificate put in the files was served (and, being served, never told to the daemon's
    // agents) until the renewal planned for the one it replaced came due, weeks later.
    const renewed = () =>
      daemon.logs.filter((l) => l.msg === "server certificate renewed from the local CA").length;
    const before = renewed();
    assert.ok(before >= 1, "the revoked certificate was renewed once");
    writeFileSync(join(dir, "pki", "server.key"), stolen.keyPem, { mode: 0o600 });
    writeFileSync(join(dir, "pki", "server.crt"), stolen.certPem);
    await eventually(
      () => {
        assert.ok(renewed() > before, "the restored revoked certificate was not renewed");
        const now = readFileSync(join(dir, "pki", "server.crt"), "utf8");
        assert.notEqual(serialKey(now), serialKey(stolen.certPem));
      },
      { timeoutMs: 20_000, intervalMs: 100 },
    );
    // While it served the revoked certificate the daemon left it out of its agents' list (it
    // never tells them the one it serves); serving the new one, it tells them again.
    await eventually(
      () => {
        const list = readFileSync(join(agentDir, "revoked-servers.json"), "utf8");
        assert.ok(
          list.includes(`"${serialKey(stolen.certPem)}"`),
          "the agent was not told again once the daemon served a new certificate",
        );
      },
      { timeoutMs: 20_000, intervalMs: 100 },
    );
  });

  it("an agent that learned the revocation refuses a server presenting the revoked certificate, and sends it nothing", async () => {
    const a = agents[0] as AgentProcess;
    daemon.kill();
    await daemon.exited;
    const since = a.logs.length;
    // Servers are tried in turn: the rogue one is tried within the first few attempts.
    const refused = await refusedBy(a, rogue.address, since);
    assert.equal(refused.serverCertificate, serialKey(stolen.certPem));
    await sleep(1000);
    assert.deepEqual(sentToRogue, [], "the agent sent the rogue server its Hello");
    await stop(a);
  });

  it("the list survives a restart: a fresh agent pointed only at the rogue server refuses it", async () => {
    for (const earlier of agents) await stop(earlier);
    const a = run(rogue.address);
    await refusedBy(a, rogue.address);
    await sleep(1000);
    assert.deepEqual(sentToRogue, [], "the restarted agent sent the rogue server its Hello");
    assert.equal(a.logs.filter((l) => l.msg === CONNECTED).length, 0);
    await stop(a);
  });
});
