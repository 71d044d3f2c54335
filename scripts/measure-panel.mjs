// Measures the web panel's page load on a running dev cluster in Debian's
// Chromium: `node scripts/measure-panel.mjs [dataDir]` (default .debvisor),
// after `npm start`. Prints the bundle size and, over 5 loads, the median
// time to the load event and to the overview's node table.
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const dataDir = process.argv[2] ?? ".debvisor";
const url = process.env.PANEL_URL ?? "https://127.0.0.1:7444/";
const password = readFileSync(join(dataDir, "panel-admin-password"), "utf8").trim();
const sizes = ["index.html", "app.js", "app.css"].map((f) => [
  f,
  statSync(join("dist/web", f)).size,
]);
console.log(
  `bundle: ${sizes.map(([f, s]) => `${f} ${s} B`).join(", ")}; total ${sizes.reduce((n, [, s]) => n + s, 0)} B`,
);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
const page = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
await page.goto(url);
await page.getByLabel("User").fill("admin");
await page.getByLabel("Password").fill(password);
await page.keyboard.press("Enter");
await page.getByTestId("node-count").waitFor();
const load = [];
const ready = [];
for (let i = 0; i < 5; i++) {
  const t0 = Date.now();
  await page.reload();
  await page.getByTestId("nodes").locator("tbody tr").first().waitFor();
  ready.push(Date.now() - t0);
  load.push(await page.evaluate(() => performance.getEntriesByType("navigation")[0].loadEventEnd));
}
const median = (a) => a.sort((x, y) => x - y)[Math.floor(a.length / 2)];
console.log(
  `page load (load event): ${Math.round(median(load))} ms; overview with nodes shown: ${median(ready)} ms (median of 5)`,
);
await browser.close();
