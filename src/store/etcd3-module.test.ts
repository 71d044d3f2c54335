import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { describe, it } from "node:test";

describe("etcd3 loaded on demand", () => {
  it("is not loaded by the daemon's modules: a daemon on SQLite never pays for it", () => {
    // A fresh process, since this one may have loaded it for another test.
    const script = `
      await import(${JSON.stringify(new URL("../server/index.js", import.meta.url).href)});
      const { createRequire } = await import("node:module");
      const cache = createRequire(import.meta.url).cache;
      process.stdout.write(Object.keys(cache).filter((k) => k.includes("/node_modules/etcd3/")).join(","));
    `;
    const loaded = execFileSync(process.execPath, ["--input-type=module", "-e", script], {
      encoding: "utf8",
      timeout: 30_000,
    });
    assert.equal(loaded, "");
  });
});
