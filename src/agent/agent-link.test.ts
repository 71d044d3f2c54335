import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "../core/index.js";
import { runAgentLink } from "./agent-link.js";

/** Runs a link that can never connect for `ms`; answers the waits it chose between attempts. */
async function waits(maxRetryMs: (() => number) | undefined, ms: number): Promise<number[]> {
  const seen: number[] = [];
  const logger = {
    warn: (o: { retryInMs?: number }) => {
      if (o.retryInMs !== undefined) seen.push(o.retryInMs);
    },
    info: () => {},
    debug: () => {},
    error: () => {},
  } as unknown as Logger;
  const stop = new AbortController();
  const link = runAgentLink({
    // No such files: every attempt fails before any network traffic.
    files: {
      dir: "/nonexistent",
      key: "/nonexistent/k",
      cert: "/nonexistent/c",
      ca: "/nonexistent/ca",
    },
    servers: ["127.0.0.1:1"],
    reconnect: { initialMs: 100, maxMs: 30_000 },
    heartbeatIntervalMs: 1000,
    logger,
    signal: stop.signal,
    hello: async () => ({}),
    heartbeat: async () => ({}),
    onWelcome: () => {},
    onMessage: () => {},
    onDown: () => {},
    maxRetryMs,
  });
  await sleep(ms);
  stop.abort();
  await link.done;
  return seen;
}

describe("the agent's reconnect wait", () => {
  it("grows exponentially to its cap, and stays within the tighter cap the self-fence asks for", async () => {
    const capped = await waits(() => 250, 2500);
    assert.ok(capped.length >= 8, `${capped.length} attempts in 2.5 s`);
    assert.ok(
      capped.every((w) => w <= 250),
      `every wait within 250 ms: ${capped.join(", ")}`,
    );
    // Without it, the waits grow past the window's eighth (100 ms doubling: 3.2 s by the sixth).
    const free = await waits(undefined, 2500);
    assert.ok(free.length < capped.length, `${free.length} attempts uncapped`);
  });
});
