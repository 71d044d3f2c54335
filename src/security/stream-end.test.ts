import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  type CallContext,
  type CallResult,
  createManualClock,
  type Invocation,
  RpcError,
  silentLogger,
} from "../core/index.js";
import type { ApiKeyRecord } from "../gen/debvisor/store/v1/records_pb.js";
import { createSqliteStore, type PrefixMirror } from "../store/index.js";
import { createAccessPolicy } from "./access-evaluator.js";
import { createApiKeys } from "./api-keys.js";
import { createAuthenticationStage } from "./authentication-stage.js";
import { createAuthorizationStage } from "./authorization-stage.js";
import { createLockout } from "./lockout.js";
import { endWhen } from "./stream-end.js";

/** A call to a streaming method, as an adapter would build it. */
function streamCall(headers: Record<string, string>, signal = new AbortController().signal) {
  const ctx = {
    requestId: "r1",
    method: {
      access: "authenticated",
      kind: "server_streaming",
      permission: "vm:list",
      target: { kind: "any" },
      path: "/debvisor.v1.WatchService/WatchVms",
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

/** A handler stream that yields once, then waits until its call's signal aborts. */
const quietStream =
  (out: { returned: number }) =>
  async (inv: Invocation): Promise<CallResult> => ({
    kind: "stream",
    responses: (async function* () {
      try {
        yield 1;
        await new Promise<void>((resolve) =>
          inv.ctx.signal.addEventListener("abort", () => resolve(), { once: true }),
        );
      } finally {
        out.returned++;
      }
    })(),
  });

/**
 * A copy of the keys that has not heard of a key yet (a key made on another
 * daemon a moment ago, its watch event still on the way): fresh, not stale.
 */
function laggingMirror(): PrefixMirror<ApiKeyRecord> {
  return {
    values: () => new Map(),
    staleSince: () => undefined,
    revision: () => 0,
    onChange: () => () => {},
    close: () => {},
  } as unknown as PrefixMirror<ApiKeyRecord>;
}

describe("a key's stream and this daemon's copy of the keys", () => {
  it("does not end at once a stream whose key verify() accepted from the store while the copy lags", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-stream-end-")), "state.db"),
      logger: silentLogger,
    });
    try {
      const clock = createManualClock(Date.now());
      // Another daemon made the key; this daemon's copy has not heard of it yet.
      const elsewhere = createApiKeys(store, clock);
      const issued = await elsewhere.create({
        principal: "ci",
        roles: ["viewer"],
        createdBy: "t",
      });
      const here = createApiKeys(store, clock, laggingMirror());
      assert.ok("record" in (await here.verify(issued.token)), "verify reads the store: accepted");
      const stage = createAuthenticationStage({
        apiKeys: here,
        jwt: () => undefined,
        lockout: createLockout({ clock }),
        clock,
      });
      const out = { returned: 0 };
      const result = await stage(
        streamCall({ authorization: `Bearer ${issued.token}` }),
        quietStream(out),
      );
      assert.equal(result.kind, "stream");
      const it = (result as { responses: AsyncIterable<unknown> }).responses[
        Symbol.asyncIterator
      ]();
      const first = await it.next().then(
        (r) => `message ${String(r.value)}`,
        (e: unknown) => `ended ${(e as RpcError).code}: ${String((e as Error).cause)}`,
      );
      assert.equal(
        first,
        "message 1",
        "the call was authenticated, then its stream ended before its first message",
      );
      void it.return?.();
    } finally {
      await store.close();
    }
  });
});

describe("listeners of ended streams (held)", () => {
  it("removes its policy-change listener when 1,000 streams end by their client's cancel", async () => {
    const listeners = new Set<() => void>();
    const policy = createAccessPolicy({ bindings: [{ principal: "p", roles: ["viewer"] }] });
    const stage = createAuthorizationStage(
      () => policy,
      {},
      (l) => {
        listeners.add(l);
        return () => listeners.delete(l);
      },
    );
    const out = { returned: 0 };
    for (let i = 0; i < 1000; i++) {
      const abort = new AbortController();
      const inv = streamCall({}, abort.signal);
      const ctx = { ...inv.ctx, principal: { id: "p", method: "apikey", roles: [] } };
      const result = (await stage({ ...inv, ctx } as Invocation, quietStream(out))) as {
        responses: AsyncIterable<unknown>;
      };
      const it = result.responses[Symbol.asyncIterator]();
      await it.next();
      const pending = it.next();
      abort.abort();
      await pending;
    }
    assert.equal(listeners.size, 0);
    assert.equal(out.returned, 1000);
  });

  it("ends a stream ACCESS_CHANGED with a client message that names no rule", async () => {
    let policy = createAccessPolicy({ bindings: [{ principal: "p", roles: ["viewer"] }] });
    let tell = () => {};
    const stage = createAuthorizationStage(
      () => policy,
      {},
      (l) => {
        tell = l;
        return () => {};
      },
    );
    const inv = streamCall({});
    const ctx = { ...inv.ctx, principal: { id: "p", method: "apikey", roles: [] } };
    const result = (await stage({ ...inv, ctx } as Invocation, quietStream({ returned: 0 }))) as {
      responses: AsyncIterable<unknown>;
    };
    const it = result.responses[Symbol.asyncIterator]();
    await it.next();
    const pending = it.next();
    policy = createAccessPolicy({ bindings: [] });
    tell();
    await assert.rejects(pending, (e: unknown) => {
      assert.ok(e instanceof RpcError);
      assert.equal(e.reason, "PERMISSION_DENIED");
      assert.doesNotMatch(e.clientMessage, /role|viewer|grants/);
      return true;
    });
  });
});

describe("a stream whose credential expires between two messages", () => {
  it("delivers no message once the check fails, though the expiry's timer has not run", async () => {
    let expired = false;
    async function* changes() {
      yield "before";
      // The credential expires; its timer (the subscription) has not run yet.
      expired = true;
      yield "after";
    }
    const got: unknown[] = [];
    await assert.rejects(
      async () => {
        for await (const m of endWhen(
          changes(),
          () => (expired ? new RpcError("UNAUTHENTICATED") : undefined),
          () => () => {},
          true,
        ))
          got.push(m);
      },
      (e: unknown) => e instanceof RpcError && e.reason === "UNAUTHENTICATED",
    );
    assert.deepEqual(got, ["before"]);
  });
});
