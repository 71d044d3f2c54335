import type { CallContext, Invocation, RpcError } from "../../src/core/index.js";
import { silentLogger } from "../../src/core/index.js";
import type { ApiKeys } from "../../src/security/index.js";

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

/** No API keys: for stages whose calls present none. */
export const noKeys = {} as unknown as ApiKeys;

/** How a stream's next message turns out within `ms`: a message, its end, or "still open". */
export async function nextWithin(it: AsyncIterator<unknown>, ms: number): Promise<string> {
  return nextOutcome(it)(ms);
}

/**
 * Asks `it` for its next message once; the answer tells, within `ms`, how
 * that one ask went (as {@link nextWithin} says it), and can be asked again
 * later: a stream still open at one look may end before the next.
 */
export function nextOutcome(it: AsyncIterator<unknown>): (ms: number) => Promise<string> {
  const outcome = it.next().then(
    (r) => (r.done ? "completed" : `message ${String(r.value)}`),
    (e: unknown) => `ended ${(e as RpcError).reason}`,
  );
  return (ms) => {
    let timer: NodeJS.Timeout | undefined;
    // The timer goes once the outcome is known: a generous bound does not keep the test alive.
    return Promise.race([
      outcome,
      new Promise<string>((resolve) => {
        timer = setTimeout(() => resolve("still open"), ms);
      }),
    ]).finally(() => clearTimeout(timer));
  };
}

/** A change feed, as security.onPolicyChange and onReload are. */
export function changes() {
  const listeners = new Set<() => void>();
  return {
    subscribe: (l: () => void) => {
      listeners.add(l);
      return () => {
        listeners.delete(l);
      };
    },
    fire: () => {
      for (const l of [...listeners]) l();
    },
  };
}
