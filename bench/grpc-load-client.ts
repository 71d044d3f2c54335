// A small gRPC load generator on node:http2, for what h2load cannot do:
// present a client certificate (mTLS), and vary the credential and the
// request per call (heartbeats from many nodes). It checks the gRPC status of
// every response, not only the HTTP status, and records each call's latency.
import { type ClientHttp2Session, connect, constants } from "node:http2";
import { performance } from "node:perf_hooks";
import { grpcFrame, grpcMessage, percentile } from "./bench-support.js";

/** Where to send the calls. */
export interface LoadTarget {
  /** HOST:PORT. */
  readonly address: string;
  /** CA that signs the server certificate (verified, name "localhost"). */
  readonly caPem: string;
  /** A client certificate to present (mTLS). */
  readonly client?: { readonly certPem: string; readonly keyPem: string };
}

/** What to send. */
export interface LoadPlan {
  /** gRPC path, /package.Service/Method. */
  readonly path: string;
  /** Calls in total. */
  readonly calls: number;
  readonly connections: number;
  /** Calls in flight on each connection. */
  readonly streams: number;
  /** The whole run ends (the calls not made yet count as failed) after this long. */
  readonly timeoutMs: number;
  /** Call i: its serialized request message and its bearer token, if any. */
  request(i: number): { readonly message: Uint8Array; readonly bearer?: string };
  /** Checks the response message of every `checkEvery`-th call; returns a problem or undefined. */
  check?(message: Buffer, i: number): string | undefined;
  readonly checkEvery?: number;
}

/** What a load run measured. */
export interface LoadResult {
  readonly calls: number;
  readonly ok: number;
  readonly reqPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** Failed calls by what went wrong (grpc-status N, http N, error ...). */
  readonly failures: Readonly<Record<string, number>>;
  /** The first problem seen, for the report. */
  readonly firstProblem: string | undefined;
}

/** Opens one HTTP/2 connection over TLS (1.3, server name verified) and waits until it is up. */
export function openSession(target: LoadTarget, timeoutMs = 10_000): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = connect(`https://${target.address}`, {
      ca: target.caPem,
      cert: target.client?.certPem,
      key: target.client?.keyPem,
      servername: "localhost",
      minVersion: "TLSv1.3",
    });
    const timer = setTimeout(() => {
      session.destroy();
      reject(new Error(`no connection to ${target.address} within ${timeoutMs} ms`));
    }, timeoutMs);
    session.once("connect", () => {
      clearTimeout(timer);
      session.off("error", reject);
      session.on("error", () => {}); // a broken session fails its calls, which are counted
      resolve(session);
    });
    session.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** One unary call; resolves with its response message or what went wrong (never rejects). */
export function unaryCall(
  session: ClientHttp2Session,
  path: string,
  message: Uint8Array,
  bearer: string | undefined,
  timeoutMs: number,
): Promise<{ message: Buffer } | { problem: string }> {
  return new Promise((resolve) => {
    const headers: Record<string, string> = {
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc",
      te: "trailers",
    };
    if (bearer !== undefined) headers.authorization = `Bearer ${bearer}`;
    let stream: ReturnType<ClientHttp2Session["request"]>;
    try {
      stream = session.request(headers);
    } catch (err) {
      resolve({ problem: `error ${(err as Error).message}` });
      return;
    }
    let httpStatus = 0;
    let grpcStatus: string | undefined;
    let grpcText = "";
    let problem: string | undefined;
    const chunks: Buffer[] = [];
    const noteStatus = (h: Record<string, unknown>) => {
      if (h["grpc-status"] !== undefined) {
        grpcStatus = String(h["grpc-status"]);
        grpcText = String(h["grpc-message"] ?? "");
      }
    };
    stream.setTimeout(timeoutMs, () => {
      problem = "timeout";
      stream.close(constants.NGHTTP2_CANCEL);
    });
    stream.on("response", (h) => {
      httpStatus = Number(h[":status"]);
      noteStatus(h);
    });
    stream.on("trailers", noteStatus);
    stream.on("data", (d: Buffer) => chunks.push(d));
    stream.on("error", (err) => {
      problem ??= `error ${err.message}`;
    });
    stream.on("close", () => {
      if (problem !== undefined) return resolve({ problem });
      if (httpStatus !== 200) return resolve({ problem: `http ${httpStatus}` });
      if (grpcStatus !== "0")
        return resolve({ problem: `grpc-status ${grpcStatus ?? "missing"} ${grpcText}`.trim() });
      const m = grpcMessage(Buffer.concat(chunks));
      resolve(typeof m === "string" ? { problem: m } : { message: m });
    });
    stream.end(grpcFrame(message));
  });
}

/** Sends `plan.calls` calls over `plan.connections` connections, `plan.streams` in flight on each. */
export async function runGrpcLoad(target: LoadTarget, plan: LoadPlan): Promise<LoadResult> {
  const sessions: ClientHttp2Session[] = [];
  try {
    for (let c = 0; c < plan.connections; c++) sessions.push(await openSession(target));
    const latencies = new Float64Array(plan.calls);
    const failures: Record<string, number> = {};
    let firstProblem: string | undefined;
    let next = 0;
    let ok = 0;
    let measured = 0;
    const deadline = performance.now() + plan.timeoutMs;
    const every = plan.checkEvery ?? 1;
    const worker = async (session: ClientHttp2Session) => {
      while (next < plan.calls) {
        const i = next++;
        const left = deadline - performance.now();
        const req = plan.request(i);
        const t0 = performance.now();
        const r =
          left <= 0
            ? { problem: "run timed out" }
            : await unaryCall(session, plan.path, req.message, req.bearer, left);
        latencies[measured++] = performance.now() - t0;
        const problem =
          "problem" in r
            ? r.problem
            : plan.check !== undefined && i % every === 0
              ? plan.check(r.message, i)
              : undefined;
        if (problem === undefined) ok++;
        else {
          const kind = problem.split(" ").slice(0, 2).join(" ");
          failures[kind] = (failures[kind] ?? 0) + 1;
          firstProblem ??= `call ${i}: ${problem}`;
        }
      }
    };
    const start = performance.now();
    await Promise.all(
      sessions.flatMap((s) => Array.from({ length: plan.streams }, () => worker(s))),
    );
    const elapsedS = (performance.now() - start) / 1000;
    const sorted = latencies.subarray(0, measured).sort();
    return {
      calls: plan.calls,
      ok,
      reqPerSec: measured / elapsedS,
      p50Ms: percentile(sorted, 0.5),
      p99Ms: percentile(sorted, 0.99),
      failures,
      firstProblem,
    };
  } finally {
    for (const s of sessions) s.close();
  }
}
