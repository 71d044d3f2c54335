import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { gzipSync } from "node:zlib";

/** The panel's stated budget: every asset it serves, together, as built. */
export const PANEL_BUDGET_BYTES = 200 * 1024;
/** The same, compressed as a proxy would send it. */
export const PANEL_BUDGET_GZIP_BYTES = 60 * 1024;
const DIR = join(process.cwd(), "dist", "web");

describe("web panel assets", () => {
  const files = readdirSync(DIR);

  it(`stay under the size budget (${PANEL_BUDGET_BYTES / 1024} KiB, ${PANEL_BUDGET_GZIP_BYTES / 1024} KiB gzipped)`, () => {
    const raw = files.reduce((n, f) => n + statSync(join(DIR, f)).size, 0);
    const gz = files.reduce((n, f) => n + gzipSync(readFileSync(join(DIR, f))).length, 0);
    assert.ok(raw <= PANEL_BUDGET_BYTES, `${raw} bytes > ${PANEL_BUDGET_BYTES}`);
    assert.ok(gz <= PANEL_BUDGET_GZIP_BYTES, `${gz} gzipped bytes > ${PANEL_BUDGET_GZIP_BYTES}`);
  });

  it("are the bundle alone: no inline script or style, nothing from another origin", () => {
    assert.deepEqual(files.sort(), ["app.css", "app.js", "index.html"]);
    const html = readFileSync(join(DIR, "index.html"), "utf8");
    for (const m of html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)) {
      assert.match(m[1] ?? "", /src="\/app\.js"/);
      assert.equal(m[2]?.trim(), "", "inline script");
    }
    assert.doesNotMatch(html, /<style|style=|https?:\/\//);
    assert.doesNotMatch(
      readFileSync(join(DIR, "app.js"), "utf8"),
      /https?:\/\/(?!www\.w3\.org)[a-z]/i,
    );
  });
});
