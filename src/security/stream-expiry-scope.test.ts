import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  type CallContext,
  type CallResult,
  type Clock,
  createManualClock,
  type Invocation,
  type PeerCertificate,
  RpcError,
  silentLogger,
} from "../core/index.js";
import { createSqliteStore, type KvStore } from "../store/index.js";
import { type ApiKeys, loadApiKeys } from "./api-keys.js";
import { createAuthenticationStage } from "./authentication-stage.js";
import type { JwtVerifier } from "./jwt-verifier.js";
import { createLockout } from "./lockout.js";
import { endWhen } from "./stream-end.js";

// What the check before each message (74f623c) ends and what it leaves: a
// stream that shows what the caller may see ends at its credential's expiry;
// a stream doing work (a drain, an agent's stream) outlives it, as before.

function streamCall(
  name: string,
  kind: string,
  headers: Record<string, string>,
  certificate?: PeerCertificate,
): Invocation {
  const ctx = {
    requestId: "r1",
    method: {
      access: "authenticated",
      kind,
      name,
      permission: "vm:list",
      target: { kind: "any" },
      path: `/debvisor.v1.X/${name}`,
    },
    peer: { address: "192.0.2.1:5000", certificate },
    headers: { get: (n: string) => headers[n] },
    deadline: undefined,
    signal: new AbortController().signal,
    startedAt: Date.now(),
    log: silentLogger,
    notes: {},
  } as unknown as CallContext;
  return { ctx, request: {} } as Invocation;
}

/** A stream's source whose messages the test pushes. */
function pushedSource() {
  const items: unknown[] = [];
  let waiting: ((r: IteratorResult<unknown>) => void) | undefined;
  const iterator: AsyncIterator<unknown> = {
    next: () =>
      items.length > 0
        ? Promise.resolve({ value: items.shift(), done: false })
        : new Promise((r) => {
            waiting = r;
          }),
    return: () => {
      waiting?.({ value: undefined, done: true });
      return Promise.resolve({ value: undefined, done: true });
    },
  };
  return {
    iterable: { [Symbol.asyncIterator]: () => iterator } as AsyncIterable<unknown>,
    push(v: unknown) {
      const w = waiting;
      waiting = undefined;
      if (w) w({ value: v, done: false });
      else items.push(v);
    },
  };
}

/** Opens `inv` through `stage`; the test pushes its messages and reads what the client gets. */
async function open(stage: ReturnType<typeof createAuthenticationStage>, inv: Invocation) {
  const source = pushedSource();
  const result = (await stage(
    inv,
    async (): Promise<CallResult> => ({ kind: "stream", responses: source.iterable }),
  )) as { responses: AsyncIterable<unknown> };
  const out = result.responses[Symbol.asyncIterator]();
  return {
    /** Pushes `m` and says what the client got: the message, or how the stream ended. */
    send: (m: string) => {
      source.push(m);
      return out.next().then(
        (r) => `message ${String(r.value)}`,
        (e: RpcError) => `ended ${e.reason}: ${String(e.cause)}`,
      );
    },
  };
}

async function withKeys(clock: Clock, use: (keys: ApiKeys) => Promise<void>): Promise<void> {
  const store: KvStore = createSqliteStore({
    path: join(mkdtempSync(join(tmpdir(), "dv-expiry-scope-")), "state.db"),
    logger: silentLogger,
  });
  const keys = await loadApiKeys(store, clock, silentLogger);
  try {
    await use(keys);
  } finally {
    keys.close();
    await store.close();
  }
}

const stageOf = (keys: ApiKeys, clock: Clock, extra: object = {}) =>
  createAuthenticationStage({
    apiKeys: keys,
    jwt: () => undefined,
    lockout: createLockout({ clock }),
    clock,
    ...extra,
  });

describe("the credential check before each message of a stream", () => {
  it("an API key past its expiry: a view stream ends, a drain goes on", async () => {
    const clock = createManualClock(Date.now());
    await withKeys(clock, async (keys) => {
      const stage = stageOf(keys, clock);
      const k = await keys.create({ principal: "a", roles: [], ttlMs: 1000, createdBy: "t" });
      const headers = { authorization: `Bearer ${k.token}` };
      const drain = await open(stage, streamCall("DrainNode", "server_streaming", headers));
      const watch = await open(stage, streamCall("WatchVms", "server_streaming", headers));
      clock.advance(5000);
      for (const m of ["p1", "p2"]) assert.equal(await drain.send(m), `message ${m}`);
      assert.match(await watch.send("v1"), /^ended UNAUTHENTICATED: .*API key expired/);
    });
  });

  it("a client certificate past its notAfter: an agent's stream goes on, a view stream ends", async () => {
    const clock = createManualClock(Date.now());
    await withKeys(clock, async (keys) => {
      const stage = stageOf(keys, clock, {
        revocations: { isRevoked: () => false, onChange: () => () => {} },
      });
      const cert = {
        commonName: "node-1",
        subject: "CN=node-1",
        issuer: "CN=ca",
        serialNumber: "0A1B",
        fingerprint256: "",
        notAfterMs: clock.now() + 1000,
      };
      const agent = await open(stage, streamCall("Connect", "bidi_streaming", {}, cert));
      const watch = await open(stage, streamCall("WatchNodes", "server_streaming", {}, cert));
      clock.advance(5000);
      assert.equal(await agent.send("operation"), "message operation");
      assert.match(await watch.send("n1"), /^ended UNAUTHENTICATED: .*certificate expired/);
    });
  });

  it("a JWT: a view stream lasts until exp plus the skew, as verify() judges it, a drain past it", async () => {
    const clock = createManualClock(1_000_000);
    const expiresAtMs = 1_010_000; // exp + clockSkewSeconds, as the verifier gives it
    const verifier = {
      verify: async () => ({
        identity: { subject: "u", issuer: "i", roles: [], expiresAtMs, verifiedAtMs: clock.now() },
      }),
    } as unknown as JwtVerifier;
    await withKeys(clock, async (keys) => {
      const stage = stageOf(keys, clock, { jwt: () => verifier });
      const headers = { authorization: "Bearer aaa.bbb.ccc" };
      const watch = await open(stage, streamCall("WatchVms", "server_streaming", headers));
      const drain = await open(stage, streamCall("DrainNode", "server_streaming", headers));
      clock.set(expiresAtMs - 1);
      assert.equal(await watch.send("within the skew"), "message within the skew");
      clock.set(expiresAtMs);
      assert.match(await watch.send("at exp + skew"), /^ended UNAUTHENTICATED: .*token expired/);
      assert.equal(await drain.send("progress"), "message progress");
    });
  });
});

describe("a change told after the source answered, before the stream resumed", () => {
  it("ends the stream instead of delivering that message", async () => {
    let changed = false;
    let tell = () => {};
    let answer: (r: IteratorResult<unknown>) => void = () => {};
    const source: AsyncIterable<unknown> = {
      [Symbol.asyncIterator]: () => ({
        next: () =>
          new Promise((r) => {
            answer = r;
          }),
        return: async () => ({ value: undefined, done: true }),
      }),
    };
    const it = endWhen(
      source,
      () => (changed ? new RpcError("PERMISSION_DENIED") : undefined),
      (listener) => {
        tell = listener;
        return () => {};
      },
    )[Symbol.asyncIterator]();
    const got = it.next().then(
      (r) => `message ${String(r.value)}`,
      (e: RpcError) => `ended ${e.reason}`,
    );
    await new Promise((r) => setImmediate(r));
    answer({ value: "made after the change", done: false });
    queueMicrotask(() => {
      changed = true;
      tell();
    });
    assert.equal(await got, "ended PERMISSION_DENIED");
  });
});
