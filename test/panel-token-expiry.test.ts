// The panel's live lists across access-token expiry: the server ends a
// stream when the token that opened it runs out (security.md, "Streams keep
// their authorization while they run"); the page refreshes its token and
// opens the stream again without telling the person anything, and the list
// keeps following the cluster.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type * as grpc from "@grpc/grpc-js";
import type { Browser } from "playwright-core";
import { resolveContext } from "../src/client/index.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { devClients } from "./helpers/dev-clients.js";
import { chromiumSkip, launchChromium, panelAdmin, signIn } from "./helpers/panel-chromium.js";

/** The shortest access token the configuration allows. */
const ACCESS_TTL_MS = 10_000;

describe("the panel across access-token expiry", { skip: chromiumSkip() }, () => {
  let dir: string;
  let daemon: DaemonProcess;
  let browser: Browser;
  let url: string;
  let adminPassword: string;
  const channels: grpc.Client[] = [];
  let root: ReturnType<typeof devClients>;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-panel-ttl-"));
    daemon = await startDevDaemon(dir, {
      panel: { listen: "127.0.0.1:0", accessTtlMs: ACCESS_TTL_MS },
    });
    ({ url, adminPassword } = await panelAdmin(dir, daemon, "nobody", "nobody-long-pw"));
    root = devClients(resolveContext(join(dir, "hvctl.yaml"), "dev"), channels);
    browser = await launchChromium();
  });
  after(async () => {
    for (const ch of channels) ch.close();
    await browser?.close();
    daemon?.kill();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("keeps the node list live past the token's expiry, with no error shown", async () => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    const toasts: string[] = [];
    await page.exposeFunction("dvToast", (t: string) => toasts.push(t));
    // Every text the page's toast shows, as it shows it.
    await page.addInitScript(`
      new MutationObserver(() => {
        const t = document.getElementById("toast")?.textContent ?? "";
        if (t !== "") window.dvToast(t);
      }).observe(document, { subtree: true, childList: true, characterData: true });
    `);
    try {
      await signIn(page, url, "admin", adminPassword);
      const count = page.getByTestId("node-count");
      await count.filter({ hasText: "3 nodes, 3 ready" }).waitFor();
      // Past the token's life: every stream of the page was ended by the server and reopened.
      await sleep(ACCESS_TTL_MS + 4000);
      await root.nodes.cordonNode({ id: { id: "node-02" } });
      await page
        .getByTestId("nodes")
        .locator("tr", { hasText: "node-02" })
        .filter({ hasText: /cordoned/i })
        // A loaded machine (browser, daemon and other tests on 2 cores) can take seconds.
        .waitFor({ timeout: 30_000 });
      assert.deepEqual(
        toasts.filter((t) => /unauthenticated|reconnecting/i.test(t)),
        [],
        "no stream told the person of its token running out",
      );
    } finally {
      await context.close();
    }
  });
});
