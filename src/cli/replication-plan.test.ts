import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { UsageError } from "./cli-errors.js";
import { parseBandwidth } from "./replication-plan.js";

describe("parseBandwidth", () => {
  for (const [text, policy] of [
    ["50M", "50M"],
    ["50MiB", "50M"],
    ["1.5G", "1536M"],
    ["2G/s", "2G"],
    ["800k", "800K"],
    ["1000", "1000"],
    ["12345678", "12056K"],
  ] as const)
    it(`ok-${text} is bwlimit=${policy}`, () => assert.equal(parseBandwidth(text), policy));
  for (const text of ["", "0", "fast", "50MB", "-5M", "50 parsecs"])
    it(`fail-"${text}"`, () => assert.throws(() => parseBandwidth(text), UsageError));
});
