import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { packageFilesLoadedBy } from "../../test/helpers/loaded-packages.js";

describe("etcd3 loaded on demand", () => {
  it("is not loaded by the daemon's modules: a daemon on SQLite never pays for it", () => {
    assert.equal(packageFilesLoadedBy(new URL("../server/index.js", import.meta.url), "etcd3"), "");
  });
});
