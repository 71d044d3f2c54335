// The suite runs each test file bundled (scripts/bundle-tests.mjs). What a
// module finds beside itself, and the text of the code, must be the same
// bundled or not: this file passes as tsc wrote it, and must pass bundled.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { packageVersion } from "../src/client/index.js";

describe("a test file run bundled", () => {
  it("has its own compiled file's URL as import.meta.url", () => {
    assert.match(import.meta.url, /\/dist\/test\/bundled-test-files\.test\.js$/);
  });

  it("keeps the text of import.meta.url inside strings as written", () => {
    // A child script that uses its own URL, as the lock tests pass to `node -e`.
    const script = `process.stdout.write(import.meta.url)`;
    assert.equal(script, ["process.stdout.write(import", "meta", "url)"].join("."));
    assert.equal("import.meta.url".length, 15);
  });

  it("lets a module it imports find the files beside that module", () => {
    // src/client/version.ts reads ../../../package.json from its own compiled file.
    const root = fileURLToPath(new URL("../../", import.meta.url));
    const pkg = JSON.parse(readFileSync(`${root}package.json`, "utf8")) as { version: string };
    assert.equal(packageVersion(), pkg.version);
  });
});
