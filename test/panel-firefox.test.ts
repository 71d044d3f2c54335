import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { VmService } from "../src/gen/debvisor/v1/vm_pb.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { panelAdmin } from "./helpers/panel-chromium.js";
import type { PanelBrowser } from "./helpers/panel-client.js";
import { missingTool } from "./helpers/required-tools.js";

/** Debian's Firefox ESR; never downloaded. Under CI=true its absence fails the run. */
const FIREFOX = process.env.FIREFOX_PATH ?? "/usr/bin/firefox-esr";

/**
 * What the page reported: console errors, uncaught errors and CSP violations.
 * Firefox 153 reports a CSP violation to WebDriver BiDi's log as an error; a
 * preload script (not subject to the page's CSP) also records the page's
 * `securitypolicyviolation` events, so a blocked load is caught either way.
 */
async function watchErrors(page: Page): Promise<() => Promise<string[]>> {
  const seen: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") seen.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => seen.push(`uncaught: ${e instanceof Error ? e.message : e}`));
  await page.evaluateOnNewDocument(`
    window.__csp = [];
    document.addEventListener("securitypolicyviolation", (e) => {
      window.__csp.push("csp: " + e.violatedDirective + " blocked " + e.blockedURI);
    });`);
  return async () => [...seen, ...((await page.evaluate("window.__csp")) as string[])];
}

describe("web panel in Firefox (WebDriver BiDi)", {
  skip: missingTool("firefox-esr", existsSync(FIREFOX), "apt-get install firefox-esr"),
}, () => {
  let dir: string;
  let daemon: DaemonProcess;
  let url: string;
  let adminPassword: string;
  let admin: PanelBrowser;
  let browser: Browser;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-panel-firefox-"));
    daemon = await startDevDaemon(dir, { panel: { listen: "127.0.0.1:0" } });
    ({ url, adminPassword, admin } = await panelAdmin(
      dir,
      daemon,
      "ff-user",
      "ff-user-long-password",
    ));
    // The dev CA is not in Firefox's store: accepted for this session only.
    browser = await puppeteer.launch({
      browser: "firefox",
      executablePath: FIREFOX,
      headless: true,
      acceptInsecureCerts: true,
    });
  });
  after(async () => {
    await browser?.close();
    daemon?.kill();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("signs in, shows three nodes and a VM's page, with no page error or CSP violation", async () => {
    const vm = (await admin.client(VmService).listVms({ pageSize: 500 })).vms[0];
    assert.ok(vm, "the dev daemon has a VM");
    const page = await browser.newPage();
    page.setDefaultTimeout(20_000);
    const errors = await watchErrors(page);
    await page.goto(url);
    await page.waitForSelector("#user");
    await page.type("#user", "admin");
    await page.type("#password", adminPassword);
    await page.keyboard.press("Enter");
    await page.waitForSelector('[data-testid="principal"]');
    await page.waitForSelector('[data-testid="node-count"]::-p-text("3 nodes, 3 ready")');
    assert.equal(await page.$$eval('[data-testid="nodes"] tbody tr', (rows) => rows.length), 3);
    await page.goto(`${url}#/vms/${vm.id}`);
    await page.waitForSelector(`main h1::-p-text("VM ${vm.id}")`);
    await page.waitForSelector('main button::-p-text("Preview plan")');
    assert.deepEqual(await errors(), []);
  });
});
