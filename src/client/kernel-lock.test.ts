import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { packageFilesLoadedBy } from "../../test/helpers/loaded-packages.js";

describe("takeKernelLock", () => {
  it("leaves better-sqlite3 unloaded for hvctl until a directory is locked", () => {
    const hvctl = new URL("../cli/index.js", import.meta.url);
    assert.equal(packageFilesLoadedBy(hvctl, "better-sqlite3"), "");
  });
});
