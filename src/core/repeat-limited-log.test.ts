import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Logger } from "./logger.js";
import { repeatLimitedLogger } from "./repeat-limited-log.js";

function recorder() {
  const lines: { level: string; obj: Record<string, unknown>; msg: string }[] = [];
  const at =
    (level: string) =>
    (obj: object, msg = "") =>
      lines.push({ level, obj: obj as Record<string, unknown>, msg });
  const log: Logger = {
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    child: () => log,
  };
  return { log, lines };
}

describe("repeatLimitedLogger", () => {
  it("writes a message once per interval, and how many were left out", async () => {
    const { log, lines } = recorder();
    let t = 0;
    const quiet = repeatLimitedLogger(log, { intervalMs: 40, now: () => t });
    for (let i = 0; i < 100; i++) quiet.warn({ node: `n${i}` }, "heartbeat not recorded");
    quiet.warn({ id: 1 }, "delivery not recorded");
    assert.deepEqual(
      lines.map((l) => [l.level, l.msg, l.obj]),
      [
        ["warn", "heartbeat not recorded", { node: "n0" }],
        ["warn", "delivery not recorded", { id: 1 }],
      ],
      "the first of each at once, the repeats held",
    );
    // Past the interval, the next one says how many were left out before it.
    t = 50;
    quiet.warn({ node: "n100" }, "heartbeat not recorded");
    assert.deepEqual(lines[2]?.obj, { node: "n100", repeated: 99 });
    // Repeats with nothing after them are told at the end of the interval.
    for (let i = 0; i < 5; i++) quiet.warn({ node: "x" }, "heartbeat not recorded");
    await new Promise((r) => setTimeout(r, 120));
    const told = lines.find((l) => l.msg === "heartbeat not recorded (repeated)");
    assert.deepEqual(told?.obj, { repeated: 5, withinMs: 40 });
    assert.equal(told?.level, "warn");
    assert.equal(lines.filter((l) => l.msg.startsWith("delivery")).length, 1, "nothing to tell");
  });

  it("names the nodes whose lines were left out, at most 20", async () => {
    const { log, lines } = recorder();
    let t = 0;
    const quiet = repeatLimitedLogger(log, { intervalMs: 40, now: () => t, collect: "node" });
    quiet.warn({ node: "n0" }, "heartbeat not recorded");
    // n0's line hides n1's and n2's, each twice: the next line names them once each.
    for (const n of ["n1", "n2", "n1", "n2"]) quiet.warn({ node: n }, "heartbeat not recorded");
    quiet.warn({ id: 7 }, "heartbeat not recorded");
    t = 50;
    quiet.warn({ node: "n3" }, "heartbeat not recorded");
    assert.deepEqual(lines[1]?.obj, { node: "n3", repeated: 5, repeatedFor: ["n1", "n2"] });
    // More than 20 nodes: the first 20, and a mark that there were more.
    for (let i = 0; i < 30; i++) quiet.warn({ node: `m${i}` }, "heartbeat not recorded");
    await new Promise((r) => setTimeout(r, 120));
    const told = lines.find((l) => l.msg === "heartbeat not recorded (repeated)");
    // A long value is kept to its first 256 characters.
    t = 200;
    quiet.warn({ node: "first" }, "long");
    quiet.warn({ node: "x".repeat(100_000) }, "long");
    t = 250;
    quiet.warn({ node: "last" }, "long");
    assert.deepEqual(lines.at(-1)?.obj, {
      node: "last",
      repeated: 1,
      repeatedFor: ["x".repeat(256)],
    });
    assert.deepEqual(told?.obj, {
      repeated: 30,
      repeatedFor: Array.from({ length: 20 }, (_, i) => `m${i}`),
      repeatedForTruncated: true,
      withinMs: 40,
    });
  });
});
