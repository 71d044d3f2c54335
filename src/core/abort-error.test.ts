import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { abortError, rethrowAborted, throwIfAborted } from "./abort-error.js";
import { RpcError } from "./rpc-error.js";

describe("abortError", () => {
  it("is the signal's RpcError reason, so a call's deadline stays DEADLINE_EXCEEDED", () => {
    const ac = new AbortController();
    ac.abort(new RpcError("DEADLINE_EXCEEDED"));
    assert.equal(abortError(ac.signal).reason, "DEADLINE_EXCEEDED");
  });

  it("is CANCELLED for any other abort", () => {
    assert.equal(abortError(AbortSignal.abort()).reason, "CANCELLED");
    assert.equal(abortError(AbortSignal.abort(new Error("gone"))).reason, "CANCELLED");
  });
});

describe("throwIfAborted", () => {
  it("passes a live or missing signal and throws the mapped error for an aborted one", () => {
    throwIfAborted(undefined);
    throwIfAborted(new AbortController().signal);
    assert.throws(
      () => throwIfAborted(AbortSignal.abort()),
      (e: unknown) => e instanceof RpcError && e.reason === "CANCELLED",
    );
  });
});

describe("rethrowAborted", () => {
  it("turns an aborted node:timers/promises wait into the mapped error, at once", async () => {
    const ac = new AbortController();
    const started = Date.now();
    setTimeout(() => ac.abort(new RpcError("DEADLINE_EXCEEDED")), 20);
    await assert.rejects(
      sleep(10_000, undefined, { signal: ac.signal }).catch(rethrowAborted(ac.signal)),
      (e: unknown) => e instanceof RpcError && e.reason === "DEADLINE_EXCEEDED",
    );
    assert.ok(Date.now() - started < 5000);
  });

  it("rethrows other errors unchanged", async () => {
    const boom = new Error("boom");
    await assert.rejects(
      Promise.reject(boom).catch(rethrowAborted(new AbortController().signal)),
      (e: unknown) => e === boom,
    );
  });
});
