// One measurement of an agent-stream ceiling (agent-ceiling-server.ts): the
// same load as the daemon's (N streams, a Hello and then a 20-VM Health every
// 10 s each) against a server that decodes every message and keeps nothing.
// What the daemon costs above it is the daemon's own; what the ceiling costs
// is the transport's (TLS, HTTP/2, gRPC framing, decoding).
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createCertificateAuthority, loadCertificateAuthority } from "../src/pki/index.js";
import { type AgentLoad, heapKib, rssKib, startAgentLoad } from "./agent-load.js";
import { type ProfileDir, startAgentCeilingServer } from "./bench-servers.js";
import type { Sample } from "./measure.js";

/** What one ceiling run measured; as a Sample: heartbeats received per second, no latency. */
export interface CeilingRun extends Sample {
  readonly rssPerStreamKib: number;
  readonly heapPerStreamKib: number;
  readonly cpuMsPerHeartbeat: number;
  readonly connectSeconds: number;
}

/** A run that ended before it measured anything. */
export function failedCeilingRun(why: string): CeilingRun {
  const none = Number.NaN;
  return {
    reqPerSec: 0,
    p50Ms: 0,
    p99Ms: 0,
    cpuPer10k: none,
    calls: 0,
    rssPerStreamKib: none,
    heapPerStreamKib: none,
    cpuMsPerHeartbeat: none,
    connectSeconds: none,
    problems: [why],
  };
}

/** How the ceiling is loaded: the daemon run's own settings. */
export interface CeilingLoad {
  readonly agents: number;
  readonly heartbeatIntervalMs: number;
  readonly vmsPerNode: number;
  /** Every heartbeat lists the VMs (the daemon run's `--full-reports`). */
  readonly fullReports?: boolean;
  /** Heartbeat intervals measured in steady state. */
  readonly windowIntervals: number;
}

/** Starts the `kind` ceiling in `dir`, holds the load on it, and measures it like the daemon. */
export async function measureAgentCeiling(
  kind: "grpc-js" | "http2",
  load: CeilingLoad,
  dir: string,
  profileDir: ProfileDir,
  log: (line: string) => void,
): Promise<CeilingRun> {
  mkdirSync(dir, { recursive: true });
  const caMaterial = await createCertificateAuthority({ commonName: "Ceiling CA" });
  const ca = await loadCertificateAuthority(caMaterial);
  const serverCert = await ca.issue({
    commonName: "localhost",
    usage: "server",
    altNames: ["localhost", "127.0.0.1"],
  });
  const write = (file: string, text: string) => {
    writeFileSync(join(dir, file), text, { mode: 0o600 });
    return join(dir, file);
  };
  const files = {
    ca: write("ca.crt", caMaterial.certPem),
    cert: write("server.crt", serverCert.certPem),
    key: write("server.key", serverCert.keyPem),
  };
  const caKeyFile = write("ca.key", caMaterial.keyPem);
  const server = await startAgentCeilingServer(
    `agent-ceiling-${kind}-${load.agents}`,
    kind,
    files,
    profileDir,
  );
  let started: AgentLoad | undefined;
  try {
    await new Promise((r) => setTimeout(r, 2000));
    const rss0 = rssKib(server.pid);
    const heap0 = await heapKib(server.metricsAddress);
    started = await startAgentLoad({
      address: server.address,
      caCertFile: files.ca,
      caKeyFile,
      agents: load.agents,
      nodePrefix: "cn",
      heartbeatIntervalMs: load.heartbeatIntervalMs,
      vmsPerNode: load.vmsPerNode,
      fullReports: load.fullReports,
      serverPid: server.pid,
      log,
    });
    const connected = await started.connected;
    const problems: string[] = [];
    if (connected.streams !== load.agents)
      problems.push(
        `${connected.streams} of ${load.agents} streams welcomed (first error: ${connected.firstError})`,
      );
    await new Promise((r) => setTimeout(r, load.heartbeatIntervalMs + 2000));
    const cpu0 = server.cpuSeconds();
    const beats0 = started.heartbeats();
    await new Promise((r) => setTimeout(r, load.windowIntervals * load.heartbeatIntervalMs));
    const cpu1 = server.cpuSeconds();
    const beats = started.heartbeats() - beats0;
    const rss1 = rssKib(server.pid);
    const heap1 = await heapKib(server.metricsAddress);
    const ended = started.ended();
    if (ended.count > 0) problems.push(`${ended.count} streams ended (${ended.firstError})`);
    const cpuMs = beats > 0 ? ((cpu1 - cpu0) / beats) * 1000 : Number.NaN;
    const run: CeilingRun = {
      reqPerSec: beats / (load.windowIntervals * (load.heartbeatIntervalMs / 1000)),
      p50Ms: 0,
      p99Ms: 0,
      cpuPer10k: cpuMs * 10,
      calls: beats,
      rssPerStreamKib: (rss1 - rss0) / load.agents,
      heapPerStreamKib: (heap1 - heap0) / load.agents,
      cpuMsPerHeartbeat: cpuMs,
      connectSeconds: connected.ms / 1000,
      problems,
    };
    log(
      `  ceiling ${kind} ${String(load.agents).padStart(6)} streams: RSS ${run.rssPerStreamKib.toFixed(1)} KiB/stream (${(rss0 / 1024).toFixed(0)} -> ${(rss1 / 1024).toFixed(0)} MiB; V8 heap in use ${run.heapPerStreamKib.toFixed(1)} KiB/stream), CPU ${run.cpuMsPerHeartbeat.toFixed(3)} ms/heartbeat (${beats} heartbeats)${problems.length > 0 ? `  REJECTED: ${problems.join("; ")}` : ""}`,
    );
    return run;
  } finally {
    await started?.stop();
    await server.stop();
  }
}
