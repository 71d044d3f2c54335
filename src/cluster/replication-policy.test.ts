import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RpcError } from "../core/index.js";
import {
  DEFAULT_POLICY,
  parseReplicationPolicy,
  resolveReplicationPolicy,
} from "./replication-policy.js";

describe("parseReplicationPolicy", () => {
  const ok: [string, string, object][] = [
    ["ok-empty", "", DEFAULT_POLICY],
    [
      "ok-all",
      "interval=2h keep=5 bwlimit=50M",
      { intervalMs: 7_200_000, keep: 5, bandwidthLimit: 50 * 1024 ** 2 },
    ],
    ["ok-commas", "interval=90s,keep=1", { intervalMs: 90_000, keep: 1, bandwidthLimit: 0 }],
    ["ok-plain-bytes", "bwlimit=1000", { ...DEFAULT_POLICY, bandwidthLimit: 1000 }],
  ];
  for (const [name, text, want] of ok)
    it(`${name}: ${JSON.stringify(text)}`, () =>
      assert.deepEqual(parseReplicationPolicy(text), want));

  const fail: [string, string, RegExp][] = [
    ["fail-too-often", "interval=30s", /interval/],
    ["fail-too-rare", "interval=31d", /interval/],
    ["fail-no-unit", "interval=15", /interval/],
    ["fail-keep-zero", "keep=0", /keep/],
    ["fail-keep-word", "keep=three", /keep/],
    ["fail-bwlimit-unit", "bwlimit=5T", /bwlimit/],
    ["fail-unknown", "schedule=*/15", /unknown setting/],
    ["fail-twice", "keep=2 keep=3", /twice/],
  ];
  for (const [name, text, message] of fail)
    it(`${name}: ${JSON.stringify(text)} is INVALID_ARGUMENT`, () =>
      assert.throws(
        () => parseReplicationPolicy(text),
        (e: unknown) =>
          e instanceof RpcError && e.reason === "INVALID_ARGUMENT" && message.test(e.clientMessage),
      ));
});

describe("resolveReplicationPolicy", () => {
  const named = { gold: "interval=15m keep=96", hourly: "interval=1h" };
  it("ok-a-configured-name-stands-for-its-policy", () =>
    assert.deepEqual(resolveReplicationPolicy("gold", named), {
      intervalMs: 900_000,
      keep: 96,
      bandwidthLimit: 0,
    }));
  it("ok-settings-are-parsed-as-before", () =>
    assert.deepEqual(resolveReplicationPolicy("keep=5", named), { ...DEFAULT_POLICY, keep: 5 }));
  it("ok-empty-is-the-default", () =>
    assert.deepEqual(resolveReplicationPolicy("", named), DEFAULT_POLICY));
  it("fail-an-unknown-name-lists-the-configured-ones", () =>
    assert.throws(
      () => resolveReplicationPolicy("platinum", named),
      (e: unknown) =>
        e instanceof RpcError &&
        e.reason === "INVALID_ARGUMENT" &&
        /no policy named "platinum".*gold, hourly/.test(e.clientMessage),
    ));
  it("fail-no-inherited-names", () =>
    assert.throws(() => resolveReplicationPolicy("constructor", named), RpcError));
});
