import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createChangeLog } from "./change-log.js";

describe("a change log", () => {
  it("answers the keys changed since a version, and nothing for the current one", () => {
    const log = createChangeLog();
    const v0 = log.version();
    log.note("a");
    const v1 = log.version();
    log.note("b");
    log.note("a");
    assert.deepEqual([...(log.since(v0) ?? [])].sort(), ["a", "b"]);
    assert.deepEqual([...(log.since(v1) ?? [])].sort(), ["a", "b"]);
    assert.deepEqual([...(log.since(log.version()) ?? ["x"])], []);
  });

  it("knows nothing from before a reset", () => {
    const log = createChangeLog();
    const v0 = log.version();
    log.note("a");
    log.reset();
    assert.equal(log.since(v0), undefined);
    const v1 = log.version();
    log.note("c");
    assert.deepEqual([...(log.since(v1) ?? [])], ["c"]);
  });

  it("forgets the oldest changes past its limit, and then cannot answer for them", () => {
    const log = createChangeLog(4);
    const v0 = log.version();
    for (const k of ["a", "b", "c", "d"]) log.note(k);
    assert.deepEqual([...(log.since(v0) ?? [])], ["a", "b", "c", "d"]);
    const v4 = log.version();
    log.note("e");
    assert.equal(log.since(v0), undefined, "a was dropped: unknown, not 'unchanged'");
    assert.deepEqual([...(log.since(v4) ?? [])], ["e"]);
    for (const k of ["f", "g", "h", "i"]) log.note(k);
    assert.equal(log.since(v4), undefined);
  });

  it("answers a version it has not reached yet as unknown", () => {
    const log = createChangeLog();
    assert.equal(log.since(log.version() + 1), undefined);
  });
});
