import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { prettyLogLine } from "./pretty-log.js";

describe("prettyLogLine", () => {
  const line = JSON.stringify({
    level: "info",
    time: "2026-12-02T06:12:01.123Z",
    pid: 1,
    hostname: "h",
    name: "debvisor-rpcd",
    address: "127.0.0.1:7443",
    dev: true,
    note: "two words",
    msg: "serving",
  });
  it("ok-reads-like-a-sentence-with-its-fields", () =>
    assert.equal(
      prettyLogLine(line, false),
      '06:12:01 INFO  serving address=127.0.0.1:7443 dev=true note="two words"\n',
    ));
  it("ok-colours-the-level-only-when-asked", () => {
    const ESC = "\u001b";
    assert.ok(prettyLogLine(line, true).includes(`${ESC}[32mINFO ${ESC}[0m serving`));
    assert.ok(!prettyLogLine(line, false).includes(ESC));
  });
  it("ok-an-error-shows-its-message-then-its-stack", () => {
    const out = prettyLogLine(
      JSON.stringify({
        level: "error",
        time: "2026-12-02T06:12:01Z",
        msg: "failed",
        err: { message: "boom", stack: "Error: boom\n    at x" },
      }),
      false,
    );
    assert.equal(out, '06:12:01 ERROR failed err="boom"\n    Error: boom\n        at x\n');
  });
  it("ok-not-json-passes-through", () => assert.equal(prettyLogLine("plain", false), "plain\n"));
});
