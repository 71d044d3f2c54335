import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type ChangeLog, createChangeLog } from "./change-log.js";

/** The keys of `keys` changed after `version`, or undefined when the log cannot tell. */
function changedAfter(log: ChangeLog, keys: readonly string[], version: number) {
  if (version < log.knownFrom()) return undefined;
  return keys.filter((k) => log.lastChange(k) > version);
}

describe("a change log", () => {
  it("tells which keys changed after a version, and none after the current one", () => {
    const log = createChangeLog();
    const v0 = log.version();
    log.note("a");
    const v1 = log.version();
    log.note("b");
    log.note("a");
    const keys = ["a", "b", "c"];
    assert.deepEqual(changedAfter(log, keys, v0), ["a", "b"]);
    assert.deepEqual(changedAfter(log, keys, v1), ["a", "b"]);
    log.note("c");
    const v4 = log.version();
    assert.deepEqual(changedAfter(log, keys, v4 - 1), ["c"]);
    assert.deepEqual(changedAfter(log, keys, v4), []);
  });

  it("knows nothing from before a reset", () => {
    const log = createChangeLog();
    const v0 = log.version();
    log.note("a");
    log.reset();
    assert.equal(changedAfter(log, ["a"], v0), undefined);
    const v1 = log.version();
    assert.deepEqual(changedAfter(log, ["a", "c"], v1), []);
    log.note("c");
    assert.deepEqual(changedAfter(log, ["a", "c"], v1), ["c"]);
  });

  it("starts again past its bound, and then cannot answer for the versions before", () => {
    const log = createChangeLog(3);
    const v0 = log.version();
    for (const k of ["a", "b", "c", "a"]) log.note(k);
    assert.deepEqual(changedAfter(log, ["a", "b", "c", "d"], v0), ["a", "b", "c"]);
    const v4 = log.version();
    log.note("d");
    assert.equal(
      changedAfter(log, ["a"], v0),
      undefined,
      "a's change was forgotten: unknown, not unchanged",
    );
    assert.deepEqual(changedAfter(log, ["a", "b", "c", "d"], v4), ["d"]);
  });
});
