import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { matchesLabels, parseLabelSelector } from "./label-selector.js";
import { RpcError } from "./rpc-error.js";

const labels = { tier: "web", env: "prod", "gpu.vendor/model": "a100" };
const cases: [string, string, boolean][] = [
  ["ok-empty selects everything", "", true],
  ["ok-equal", "tier=web", true],
  ["ok-double-equal", "tier==web", true],
  ["ok-not-equal-other-value", "env!=test", true],
  ["ok-not-equal-absent-key", "zone!=a", true],
  ["ok-exists", "gpu.vendor/model", true],
  ["ok-not-exists", "!zone", true],
  ["ok-all-of-several with spaces", "tier=web, env != test ,!zone", true],
  ["fail-equal-other-value", "tier=db", false],
  ["fail-not-equal-same-value", "env!=prod", false],
  ["fail-exists-absent", "zone", false],
  ["fail-not-exists-present", "!tier", false],
  ["fail-one-of-several", "tier=web,env=test", false],
];

describe("parseLabelSelector and matchesLabels", () => {
  for (const [name, selector, want] of cases)
    it(name, () => assert.equal(matchesLabels(parseLabelSelector(selector), labels), want));

  for (const bad of ["tier=web,", "bad key=x", "!tier=web", "tier=has space", "=x", "a=b=c"])
    it(`refuses "${bad}" with INVALID_ARGUMENT naming the part`, () =>
      assert.throws(
        () => parseLabelSelector(bad),
        (e: unknown) =>
          e instanceof RpcError && e.reason === "INVALID_ARGUMENT" && /selector: "/.test(e.message),
      ));
});
