import type { CallContext, Invocation } from "../../src/core/index.js";
import { silentLogger } from "../../src/core/index.js";

/** A call to a streaming method, as an adapter would build it. */
export function streamCall(
  o: {
    name?: string;
    permission?: string;
    target?: string;
    headers?: Record<string, string>;
  } = {},
  signal = new AbortController().signal,
): Invocation {
  const name = o.name ?? "WatchVms";
  const headers = o.headers ?? {};
  const ctx = {
    requestId: "r1",
    method: {
      access: "authenticated",
      kind: "server_streaming",
      name,
      permission: o.permission ?? "vm:list",
      target: { kind: o.target ?? "any" },
      path: `/debvisor.v1.X/${name}`,
    },
    peer: { address: "192.0.2.1:5000" },
    headers: { get: (n: string) => headers[n] },
    deadline: undefined,
    signal,
    startedAt: Date.now(),
    log: silentLogger,
    notes: {},
  } as unknown as CallContext;
  return { ctx, request: {} } as Invocation;
}
