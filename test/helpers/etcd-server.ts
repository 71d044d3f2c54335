import { type ChildProcess, spawn } from "node:child_process";
import { constants } from "node:fs";
import { access, mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { missingTool } from "./required-tools.js";

/** A throwaway single-member etcd listening on 127.0.0.1 only. */
export interface EtcdServer {
  /** Client URL, `http://127.0.0.1:PORT`. */
  readonly endpoint: string;
  /** Its data directory (removed by `stop()`). */
  readonly dataDir: string;
  /** SIGTERM, waits for the exit (SIGKILL after 10 s), removes the data directory; idempotent. */
  stop(): Promise<void>;
  /** SIGKILL at once, for failure tests; `stop()` still cleans up afterwards. */
  kill(): void;
  /** Sends a signal (SIGSTOP, SIGCONT: a store that stalls), for failure tests. */
  signal(name: NodeJS.Signals): void;
  /**
   * A member restart: SIGKILL, then the same etcd again on the same ports and
   * data directory; resolves once it answers /health (single members only).
   */
  restart?(): Promise<void>;
}

const READY_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 10_000;
const START_ATTEMPTS = 3;
/** Keep the tail of etcd's stderr for error messages, not all of it. */
const STDERR_KEEP = 64 * 1024;

/**
 * Starts `etcd` from PATH in a fresh temporary directory, on free loopback
 * ports, and resolves once it answers /health. Resolves `undefined` when etcd
 * is not installed (callers skip; under CI=true it throws instead); rejects with etcd's stderr if
 * it does not come up within 15 s.
 */
export async function startEtcd(
  /** More etcd flags, e.g. `--experimental-watch-progress-notify-interval=1s`. */
  flags: readonly string[] = [],
): Promise<EtcdServer | undefined> {
  const bin = await findOnPath("etcd");
  if (missingTool("etcd", bin !== undefined, "apt-get install etcd-server")) return undefined;
  if (bin === undefined) return undefined;
  let lastError: unknown;
  // Free ports are found by binding and releasing them; another process can
  // take one in between, so a start that loses that race is tried again.
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
    try {
      return await startOnce(bin, flags);
    } catch (err) {
      lastError = err;
      if (!String((err as Error).message).includes("address already in use")) throw err;
    }
  }
  throw lastError;
}

async function startOnce(bin: string, flags: readonly string[]): Promise<EtcdServer> {
  const dataDir = await mkdtemp(join(tmpdir(), "dv-etcd-"));
  const [clientPort, peerPort] = await freePorts(2);
  const client = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const args = [
    "--name=test",
    `--data-dir=${join(dataDir, "data")}`,
    `--listen-client-urls=${client}`,
    `--advertise-client-urls=${client}`,
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=test=${peer}`,
    "--initial-cluster-state=new",
    `--initial-cluster-token=dv-test-${clientPort}`,
    "--logger=zap",
    "--log-outputs=stderr",
    "--log-level=error",
    ...flags,
  ];
  // ETCD_* variables are flags too; one left in the environment would change this server.
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.startsWith("ETCD_")),
  );
  let stderr = "";
  const launch = () => {
    const p = spawn(bin, args, { cwd: dataDir, env, stdio: ["ignore", "ignore", "pipe"] });
    p.stderr?.on("data", (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-STDERR_KEEP);
    });
    const done = new Promise<void>((resolve) => {
      p.once("exit", () => resolve());
      p.once("error", (err) => {
        stderr += `\nspawn failed: ${err.message}`;
        resolve();
      });
    });
    return { p, done };
  };
  let { p: proc, done: exited } = launch();
  // A crashed test run must not leave etcd behind.
  const killOnExit = () => killHard(proc);
  process.once("exit", killOnExit);

  let stopping: Promise<void> | undefined;
  const server: EtcdServer = {
    endpoint: client,
    dataDir,
    kill: () => killHard(proc),
    signal: (name) => {
      if (running(proc)) proc.kill(name);
    },
    restart: async () => {
      killHard(proc);
      await exited;
      ({ p: proc, done: exited } = launch());
      const until = Date.now() + READY_TIMEOUT_MS;
      while (!(await healthy(client))) {
        if (Date.now() > until) throw new Error(`etcd did not come back; stderr:\n${stderr}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },
    stop: () => {
      stopping ??= (async () => {
        if (running(proc)) {
          proc.kill("SIGCONT");
          proc.kill("SIGTERM");
          const timer = setTimeout(() => killHard(proc), STOP_TIMEOUT_MS);
          await exited;
          clearTimeout(timer);
        }
        await exited;
        process.removeListener("exit", killOnExit);
        await rm(dataDir, { recursive: true, force: true });
      })();
      return stopping;
    },
  };

  const deadline = Date.now() + READY_TIMEOUT_MS;
  let ended = false;
  void exited.then(() => {
    ended = true;
  });
  while (!ended && Date.now() < deadline) {
    if (await healthy(client)) return server;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const why = ended
    ? `etcd exited (${proc.exitCode ?? proc.signalCode})`
    : "etcd not ready in time";
  await server.stop();
  throw new Error(`${why}; stderr:\n${stderr}`);
}

function running(proc: ChildProcess): boolean {
  return proc.pid !== undefined && proc.exitCode === null && proc.signalCode === null;
}

function killHard(proc: ChildProcess): void {
  if (running(proc)) proc.kill("SIGKILL");
}

async function healthy(client: string): Promise<boolean> {
  try {
    const res = await fetch(`${client}/health`, { signal: AbortSignal.timeout(1000) });
    const body = (await res.json()) as { health?: unknown };
    return res.ok && body.health === "true";
  } catch {
    return false;
  }
}

/** Ports the kernel hands out for 127.0.0.1, all held open together so they differ. */
export async function freePorts(count: number): Promise<number[]> {
  const servers = Array.from({ length: count }, () => createServer());
  try {
    return await Promise.all(
      servers.map(
        (srv) =>
          new Promise<number>((resolve, reject) => {
            srv.once("error", reject);
            srv.listen(0, "127.0.0.1", () => {
              const address = srv.address();
              if (address === null || typeof address === "string") {
                reject(new Error("no port assigned"));
              } else {
                resolve(address.port);
              }
            });
          }),
      ),
    );
  } finally {
    await Promise.all(
      servers.map((srv) => new Promise<void>((resolve) => srv.close(() => resolve()))),
    );
  }
}

async function findOnPath(name: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (dir === "") continue;
    const candidate = join(dir, name);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

/** A throwaway etcd cluster on loopback: one member per entry, each killable on its own. */
export interface EtcdCluster {
  readonly members: readonly EtcdServer[];
  /** Client URLs of every member. */
  readonly endpoints: readonly string[];
  /** The index of the current leader (asks each live member's /v3 status). */
  leader(): Promise<number>;
  stop(): Promise<void>;
}

/**
 * Starts `size` etcd members forming one cluster on free loopback ports, with
 * a short election timeout so a lost leader is replaced in about a second.
 * Resolves `undefined` when etcd is not installed (callers skip; under
 * CI=true it throws instead).
 */
export async function startEtcdCluster(size = 3): Promise<EtcdCluster | undefined> {
  const bin = await findOnPath("etcd");
  if (missingTool("etcd", bin !== undefined, "apt-get install etcd-server")) return undefined;
  if (bin === undefined) return undefined;
  // Free ports are released before the members bind them, and other test
  // files (and the members' own outgoing connections) take ports meanwhile;
  // a member that loses that race exits, and the whole cluster is started
  // again on fresh ports. Every attempt's reason is kept for the error.
  const failures: string[] = [];
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
    try {
      return await startClusterOnce(bin, size);
    } catch (err) {
      failures.push(`attempt ${attempt}: ${(err as Error).message}`);
    }
  }
  throw new Error(`etcd cluster not ready in time\n${failures.join("\n")}`);
}

async function startClusterOnce(bin: string, size: number): Promise<EtcdCluster> {
  const ports = await freePorts(size * 2);
  const names = Array.from({ length: size }, (_, i) => `m${i}`);
  const peer = (i: number) => `http://127.0.0.1:${ports[size + i]}`;
  const client = (i: number) => `http://127.0.0.1:${ports[i]}`;
  const initial = names.map((n, i) => `${n}=${peer(i)}`).join(",");
  const members: EtcdServer[] = [];
  const procs: ChildProcess[] = [];
  const stderr: string[] = names.map(() => "");
  let exitedEarly: number | undefined;
  for (let i = 0; i < size; i++) {
    const dataDir = await mkdtemp(join(tmpdir(), "dv-etcd-cluster-"));
    const env = Object.fromEntries(
      Object.entries(process.env).filter(([name]) => !name.startsWith("ETCD_")),
    );
    const proc = spawn(
      bin,
      [
        `--name=${names[i]}`,
        `--data-dir=${join(dataDir, "data")}`,
        `--listen-client-urls=${client(i)}`,
        `--advertise-client-urls=${client(i)}`,
        `--listen-peer-urls=${peer(i)}`,
        `--initial-advertise-peer-urls=${peer(i)}`,
        `--initial-cluster=${initial}`,
        "--initial-cluster-state=new",
        `--initial-cluster-token=dv-cluster-${ports[0]}`,
        "--heartbeat-interval=100",
        "--election-timeout=1000",
        "--logger=zap",
        "--log-outputs=stderr",
        "--log-level=error",
      ],
      { cwd: dataDir, env, stdio: ["ignore", "ignore", "pipe"] },
    );
    proc.stderr?.on("data", (chunk: Buffer) => {
      stderr[i] = (stderr[i] + chunk.toString()).slice(-STDERR_KEEP);
    });
    procs.push(proc);
    const exited = new Promise<void>((resolve) => {
      proc.once("exit", () => resolve());
      proc.once("error", (err) => {
        stderr[i] += `\nspawn failed: ${err.message}`;
        resolve();
      });
    });
    void exited.then(() => {
      exitedEarly ??= i;
    });
    const killOnExit = () => killHard(proc);
    process.once("exit", killOnExit);
    let stopping: Promise<void> | undefined;
    members.push({
      endpoint: client(i),
      dataDir,
      kill: () => killHard(proc),
      signal: (name) => {
        if (running(proc)) proc.kill(name);
      },
      stop: () => {
        stopping ??= (async () => {
          killHard(proc);
          await exited;
          process.removeListener("exit", killOnExit);
          await rm(dataDir, { recursive: true, force: true });
        })();
        return stopping;
      },
    });
  }
  const cluster: EtcdCluster = {
    members,
    endpoints: members.map((m) => m.endpoint),
    async leader() {
      for (let i = 0; i < size; i++) {
        if (!running(procs[i] as ChildProcess)) continue;
        try {
          const res = await fetch(`${client(i)}/v3/maintenance/status`, {
            method: "POST",
            body: "{}",
            signal: AbortSignal.timeout(1000),
          });
          const s = (await res.json()) as { header?: { member_id?: string }; leader?: string };
          if (s.leader !== undefined && s.leader === s.header?.member_id) return i;
        } catch {
          // not answering; ask the next one
        }
      }
      return -1;
    },
    stop: async () => {
      await Promise.all(members.map((m) => m.stop()));
    },
  };
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let ok: boolean[] = [];
  while (exitedEarly === undefined && Date.now() < deadline) {
    ok = await Promise.all(members.map((m) => healthy(m.endpoint)));
    if (ok.every(Boolean) && (await cluster.leader()) >= 0) return cluster;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  // Stopped first, so the exit codes below are final for a member that died.
  const early = exitedEarly;
  await cluster.stop();
  const why =
    early !== undefined
      ? `member ${names[early]} exited (${procs[early]?.exitCode ?? procs[early]?.signalCode})`
      : `not ready in ${READY_TIMEOUT_MS} ms (healthy: ${ok.map((h, i) => `${names[i]}=${h}`).join(" ")})`;
  const tails = stderr.map((e, i) => `${names[i]} stderr: ${e.trim().slice(-2000) || "(empty)"}`);
  throw new Error(`${why}\n${tails.join("\n")}`);
}
