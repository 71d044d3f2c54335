// The agents benchmark's load client, a child process of the suite (forked
// with an IPC channel): N node agents, each holding its own AgentService.Connect
// stream over mTLS with its own node certificate (issued here from the
// daemon's dev CA with the pki layer: one key pair, N certificates, so issuing
// 10,000 takes seconds). Each says Hello, heartbeats every interval with its
// VMs (phases spread over the interval), answers every dispatched operation
// with SUCCEEDED, and tells the parent when each dispatch arrived.
//
// Raw node:http2 and protobuf-es, no grpc-js: the client's own cost per
// stream stays small. The suite runs several of these clients, each holding
// a slice of the nodes, so the load does not queue behind one event loop.
import { generateKeyPairSync } from "node:crypto";
import { readFileSync } from "node:fs";
import { type ClientHttp2Session, type ClientHttp2Stream, connect } from "node:http2";
import { performance } from "node:perf_hooks";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createReportDedupe } from "../src/agent/index.js";
import {
  AgentMessageSchema,
  type ControlMessage,
  ControlMessageSchema,
  OperationOutcome,
} from "../src/gen/debvisor/v1/agent_pb.js";
import { StatusCode } from "../src/gen/debvisor/v1/common_pb.js";
import { type Health, HealthSchema } from "../src/gen/debvisor/v1/node_pb.js";
import { VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { loadCertificateAuthority } from "../src/pki/index.js";
import { grpcFrame } from "./bench-support.js";

/** What the parent sends to start the client. */
export interface AgentLoadStart {
  readonly type: "start";
  /** The daemon's gRPC HOST:PORT. */
  readonly address: string;
  readonly caCertFile: string;
  readonly caKeyFile: string;
  /** Agents this client holds: nodes `first` to `first + agents - 1`. */
  readonly agents: number;
  readonly first: number;
  /** Node ids are PREFIX-00001 ... */
  readonly prefix: string;
  readonly heartbeatIntervalMs: number;
  readonly vmsPerNode: number;
  /**
   * Every heartbeat lists the node's VMs, as an agent does for a server
   * that does not take vms_unchanged (or whose VMs change every time).
   * Otherwise the agents send heartbeats as debvisor-agent does.
   */
  readonly fullReports: boolean;
  /** Handshakes and Hellos in flight at once while connecting. */
  readonly connectConcurrency: number;
}

/** Progress while connecting, every 10 s. */
export type LoadProgress = Extract<AgentLoadReport, { type: "progress" }>;
/** Counters after connecting, every second. */
export type LoadStats = Extract<AgentLoadReport, { type: "stats" }>;

/** What the client tells the parent. */
export type AgentLoadReport =
  | { readonly type: "issued"; readonly ms: number }
  | {
      readonly type: "connected";
      readonly streams: number;
      readonly failed: number;
      /** Attempts that failed and were tried again. */
      readonly retried: number;
      readonly ms: number;
      readonly firstError?: string;
    }
  | { readonly type: "receipts"; readonly at: Record<string, number> }
  | {
      readonly type: "progress";
      readonly streams: number;
      readonly failed: number;
      readonly heartbeats: number;
      readonly ms: number;
    }
  | {
      readonly type: "stats";
      readonly heartbeats: number;
      readonly open: number;
      readonly ended: number;
      readonly firstError?: string;
    };

/** Milliseconds since the epoch with sub-millisecond precision, comparable across processes. */
export const preciseNow = () => performance.timeOrigin + performance.now();

const CONNECT_PATH = "/debvisor.v1.AgentService/Connect";
const WELCOME_TIMEOUT_MS = 30_000;
const CONNECT_ATTEMPTS = 3;
const send = (m: AgentLoadReport) => process.send?.(m);

export function nodeName(prefix: string, i: number): string {
  return `${prefix}-${String(i + 1).padStart(5, "0")}`;
}

function healthOf(node: string, vms: number): Health {
  const now = Date.now();
  return create(HealthSchema, {
    nodeId: { id: node },
    overall: StatusCode.STATUS_OK,
    cpuLoad: 1.5,
    memUsedPct: 42,
    diskUsedPct: 55,
    netRttMs: 0.4,
    timestamp: { seconds: BigInt(Math.floor(now / 1000)), nanos: (now % 1000) * 1e6 },
    vms: Array.from({ length: vms }, (_, v) => ({
      id: `${node}-vm-${String(v + 1).padStart(2, "0")}`,
      name: `vm ${v + 1}`,
      state: VmState.RUNNING,
      vcpus: 2,
      memoryBytes: 2n * 1024n ** 3n,
      nodeId: { id: node },
    })),
  });
}

/** Splits a stream of gRPC frames into messages. */
function frameReader(onMessage: (m: Buffer) => void) {
  let buffered: Buffer = Buffer.alloc(0);
  return (chunk: Buffer) => {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    while (buffered.length >= 5) {
      const length = buffered.readUInt32BE(1);
      if (buffered.length < 5 + length) return;
      onMessage(buffered.subarray(5, 5 + length));
      buffered = buffered.subarray(5 + length);
    }
  };
}

async function run(o: AgentLoadStart): Promise<void> {
  const caPem = readFileSync(o.caCertFile, "utf8");
  const ca = await loadCertificateAuthority({
    certPem: caPem,
    keyPem: readFileSync(o.caKeyFile, "utf8"),
  });
  const t0 = performance.now();
  // One key pair for every node: each node still has its own certificate (its CN is its id).
  const keys = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const keyPem = keys.privateKey.export({ type: "pkcs8", format: "pem" }).toString();
  const spkiDer = keys.publicKey.export({ type: "spki", format: "der" });
  const certs: string[] = [];
  for (let i = o.first; i < o.first + o.agents; i++)
    certs.push(
      (
        await ca.issue({
          commonName: nodeName(o.prefix, i),
          usage: "client",
          spkiDer,
          validityDays: 2,
        })
      ).certPem,
    );
  send({ type: "issued", ms: performance.now() - t0 });

  let heartbeats = 0;
  let ended = 0;
  let firstError: string | undefined;
  let receipts: Record<string, number> = {};
  const flush = setInterval(() => {
    if (Object.keys(receipts).length > 0) {
      send({ type: "receipts", at: receipts });
      receipts = {};
    }
  }, 100);
  const agents: {
    session: ClientHttp2Session;
    stream: ClientHttp2Stream;
    timer?: NodeJS.Timeout;
  }[] = [];

  const open = (i: number) =>
    new Promise<void>((resolve, reject) => {
      const node = nodeName(o.prefix, i);
      const session = connect(`https://${o.address}`, {
        ca: caPem,
        cert: certs[i - o.first],
        key: keyPem,
        servername: "localhost",
        minVersion: "TLSv1.3",
      });
      let welcomed = false;
      const fail = (why: string) => {
        clearTimeout(noWelcome);
        firstError ??= `${node}: ${why}`;
        reject(new Error(why));
      };
      // A connection the daemon never answers counts as failed, with why, instead of hanging.
      const noWelcome = setTimeout(() => {
        if (welcomed) return;
        fail(`no welcome within ${WELCOME_TIMEOUT_MS} ms`);
        session.destroy();
      }, WELCOME_TIMEOUT_MS);
      session.on("error", (err) => fail(String(err)));
      const stream = session.request({
        ":method": "POST",
        ":path": CONNECT_PATH,
        "content-type": "application/grpc",
        te: "trailers",
      });
      // The VMs sent as debvisor-agent sends them (its own code).
      const report = createReportDedupe();
      const write = (m: Parameters<typeof create<typeof AgentMessageSchema>>[1]) =>
        stream.write(
          grpcFrame(toBinary(AgentMessageSchema, report.outgoing(create(AgentMessageSchema, m)))),
        );
      stream.on(
        "data",
        frameReader((bytes) => {
          const m: ControlMessage = fromBinary(ControlMessageSchema, bytes);
          if (m.kind.case === "welcome" && !welcomed) {
            welcomed = true;
            clearTimeout(noWelcome);
            report.accepted(!o.fullReports && m.kind.value.acceptsUnchangedVms);
            const agent = { session, stream } as (typeof agents)[number];
            agents.push(agent);
            // Heartbeats at the interval, each agent at its own phase of it.
            const beat = () => {
              write({
                kind: { case: "heartbeat", value: { health: healthOf(node, o.vmsPerNode) } },
              });
              heartbeats++;
            };
            agent.timer = setTimeout(() => {
              beat();
              agent.timer = setInterval(beat, o.heartbeatIntervalMs);
            }, Math.random() * o.heartbeatIntervalMs);
            resolve();
          } else if (m.kind.case === "dispatch") {
            const id = m.kind.value.operationId;
            receipts[id] = preciseNow();
            const now = Date.now();
            write({
              kind: {
                case: "result",
                value: {
                  operationId: id,
                  outcome: OperationOutcome.SUCCEEDED,
                  finishedAt: {
                    seconds: BigInt(Math.floor(now / 1000)),
                    nanos: (now % 1000) * 1e6,
                  },
                },
              },
            });
          }
        }),
      );
      stream.on("trailers", (t) => {
        if (!welcomed) fail(`grpc-status ${t["grpc-status"]}: ${t["grpc-message"] ?? ""}`);
        else firstError ??= `${node}: stream ended, grpc-status ${t["grpc-status"]}`;
      });
      stream.on("close", () => {
        if (welcomed) ended++;
        else fail("stream closed before the welcome");
      });
      stream.on("error", (err) => fail(String(err)));
      write({
        kind: {
          case: "hello",
          value: {
            info: {
              id: { id: node },
              hostname: `${node}.bench`,
              ip: "127.0.0.1",
              version: "bench",
              capacity: { cpuCores: 64, memoryBytes: 256n * 1024n ** 3n, storageBytes: 1n << 42n },
            },
            agentVersion: "bench",
            capabilities: ["bench", "op:start-vm"],
            health: healthOf(node, o.vmsPerNode),
          },
        },
      });
    });

  const c0 = performance.now();
  let next = o.first;
  let failed = 0;
  let retried = 0;
  // Like an agent, a stream that was not welcomed tries again after a pause
  // (CONNECT_ATTEMPTS in all); it counts as failed only when every attempt failed.
  const worker = async () => {
    while (next < o.first + o.agents) {
      const i = next++;
      for (let attempt = 1; ; attempt++) {
        const ok = await open(i).then(
          () => true,
          () => false,
        );
        if (ok) break;
        if (attempt === CONNECT_ATTEMPTS) {
          failed++;
          break;
        }
        retried++;
        await new Promise((r) => setTimeout(r, 1000 * attempt));
      }
    }
  };
  const progress = setInterval(
    () =>
      send({
        type: "progress",
        streams: agents.length,
        failed,
        heartbeats,
        ms: performance.now() - c0,
      }),
    10_000,
  );
  await Promise.all(Array.from({ length: Math.min(o.connectConcurrency, o.agents) }, worker));
  clearInterval(progress);
  send({
    type: "connected",
    streams: agents.length,
    failed,
    retried,
    ms: performance.now() - c0,
    firstError,
  });
  const stats = setInterval(
    () => send({ type: "stats", heartbeats, open: agents.length - ended, ended, firstError }),
    1000,
  );
  process.on("message", (m: { type: string }) => {
    if (m.type !== "stop") return;
    clearInterval(stats);
    clearInterval(flush);
    for (const a of agents) {
      clearTimeout(a.timer);
      clearInterval(a.timer);
      a.session.destroy();
    }
    process.disconnect?.();
  });
}

process.once("message", (m: AgentLoadStart) => {
  if (m.type === "start")
    run(m).catch((err: unknown) => {
      process.stderr.write(`agent load client failed: ${(err as Error).stack ?? err}\n`);
      process.exit(1);
    });
});
