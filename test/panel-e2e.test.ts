import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { NodeService } from "../src/gen/debvisor/v1/node_pb.js";
import { VmOperationState, VmService, VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";
import {
  axe,
  chromiumSkip,
  launchChromium,
  panelAdmin,
  shot,
  signIn as signInAt,
} from "./helpers/panel-chromium.js";
import { type PanelBrowser, panelBrowser } from "./helpers/panel-client.js";

const PASSWORD = "acme-ann-long-password";

describe("web panel in Chromium", { skip: chromiumSkip() }, () => {
  let dir: string;
  let daemon: DaemonProcess;
  let url: string;
  let ca: string;
  let adminPassword: string;
  let browser: Browser;
  let admin: PanelBrowser;
  const contexts: BrowserContext[] = [];

  const newPage = async (): Promise<Page> => {
    const context = await browser.newContext({
      ignoreHTTPSErrors: true,
      viewport: { width: 1280, height: 800 },
    });
    contexts.push(context);
    return context.newPage();
  };
  const signIn = (page: Page, user: string, password: string) =>
    signInAt(page, url, user, password);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-panel-e2e-"));
    daemon = await startDevDaemon(dir, {
      panel: { listen: "127.0.0.1:0" },
      simulation: { migrationMs: 3000 },
      rbac: { bindings: [{ principal: "user:acme-ann", roles: ["viewer"], tenant: "acme" }] },
    });
    ({ url, ca, adminPassword, admin } = await panelAdmin(dir, daemon, "acme-ann", PASSWORD));
    browser = await launchChromium();
  });
  after(async () => {
    for (const c of contexts) await c.close().catch(() => {});
    await browser?.close();
    daemon?.kill();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("signs in, shows three nodes and every page, with no serious accessibility violation", async () => {
    const page = await newPage();
    const cspViolations: string[] = [];
    page.on("console", (m) => {
      if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
    });
    await page.goto(url);
    await page.getByLabel("User").waitFor();
    assert.deepEqual(await axe(page), [], "sign-in page");
    await shot(page, "sign-in");
    await signIn(page, "admin", adminPassword);
    await page.getByTestId("node-count").filter({ hasText: "3 nodes, 3 ready" }).waitFor();
    assert.equal(await page.getByTestId("nodes").locator("tbody tr").count(), 3);
    assert.deepEqual(await axe(page), [], "overview");
    await shot(page, "overview");
    for (const [hash, name, ready] of [
      ["#/nodes/node-01", "node", "VMs on this node"],
      ["#/vms", "vms", "Virtual machines"],
      ["#/migrations", "migrations", "Migrations"],
      ["#/storage", "storage", "Replication jobs"],
      ["#/access", "access", "Can I?"],
      ["#/audit", "audit", "Live"],
      ["#/enrollment", "enrollment", "Enrollment"],
    ] as const) {
      await page.goto(`${url}${hash}`);
      await page.getByRole("heading", { name: ready, exact: true }).waitFor();
      assert.deepEqual(await axe(page), [], name);
      await shot(page, name);
    }
    // Keyboard: the skip link comes first, then the navigation.
    await page.goto(`${url}#/`);
    await page.reload();
    await page.getByTestId("node-count").waitFor();
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate("document.activeElement?.textContent"), "Skip to content");
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate("document.activeElement?.textContent"), "Overview");
    assert.deepEqual(cspViolations, []);
  });

  it("previews a migration's plan with every check and follows it to 100 %", async () => {
    const vms = (await admin.client(VmService).listVms({ pageSize: 500 })).vms;
    const vm = vms.find((v) => v.liveMigratable && v.state === VmState.RUNNING);
    assert.ok(vm, "a running, live-migratable VM");
    const page = await newPage();
    await signIn(page, "admin", adminPassword);
    await page.goto(`${url}#/vms/${vm.id}`);
    await page.getByRole("button", { name: "Preview plan" }).click();
    const checks = page.getByTestId("plan").locator("li");
    await checks.first().waitFor();
    assert.ok((await checks.count()) >= 3, "every check is listed");
    await shot(page, "migration-plan");
    await page.getByRole("button", { name: "Start migration" }).click();
    await page
      .getByTestId("progress-pct")
      .filter({ hasText: "100 %" })
      .waitFor({ timeout: 20_000 });
    await page.getByTestId("migration-state").filter({ hasText: "succeeded" }).waitFor();
    await shot(page, "migration-done");
    const moved = await admin.client(VmService).getVm({ vmId: vm.id });
    assert.notEqual(moved.nodeId?.id, vm.nodeId?.id);
    // The detail shows the VM's recent events (ListEvents), the move among them.
    await page.reload();
    await page
      .getByTestId("vm-events")
      .locator("tbody tr", { hasText: "Moved" })
      .waitFor({ timeout: 20_000 });
  });

  it("shows a tenant user only its VMs and 'not found' for another tenant's by URL", async () => {
    const all = (await admin.client(VmService).listVms({ pageSize: 500 })).vms;
    const other = all.find((v) => v.tenant !== "acme");
    assert.ok(other);
    const page = await newPage();
    await signIn(page, "acme-ann", PASSWORD);
    await page.goto(`${url}#/vms`);
    const rows = page.getByTestId("vms").locator("tbody tr");
    await rows.first().waitFor();
    const tenants = await rows.locator("td:nth-child(5)").allTextContents();
    assert.ok(tenants.length > 0 && tenants.every((t) => t === "acme"), tenants.join(","));
    assert.equal(tenants.length, all.filter((v) => v.tenant === "acme").length);
    await page.goto(`${url}#/vms/${other.id}`);
    const error = page.getByTestId("vm-error");
    await error.waitFor();
    assert.match((await error.textContent()) ?? "", /not found/);
    await shot(page, "tenant-not-found");
  });

  it("creates a VM from the form, sees it appear in the live list, stops and starts it", async () => {
    const vms = admin.client(VmService);
    const page = await newPage();
    const cspViolations: string[] = [];
    page.on("console", (m) => {
      if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
    });
    await signIn(page, "admin", adminPassword);
    // The first watch fails on the network: the list reconnects by itself.
    let watchesOpened = 0;
    await page.route("**/rpc/debvisor.v1.WatchService/WatchVms", (route) =>
      watchesOpened++ === 0 ? route.abort("connectionreset") : route.continue(),
    );
    await page.goto(`${url}#/vms`);
    const rows = page.getByTestId("vms").locator("tbody tr");
    await rows.first().waitFor();
    assert.equal(watchesOpened, 2, "opened again after the failure");
    assert.equal(await page.locator("#toast").textContent(), "", "the failure notice is gone");
    const before = await rows.count();
    await page.getByLabel("VM id").fill("panel-made");
    await page.getByLabel("vCPUs").fill("2");
    await page.getByLabel("Memory (MiB)").fill("512");
    await page.getByRole("button", { name: "Create VM" }).click();
    await page
      .getByTestId("create-operation")
      .getByTestId("operation-state")
      .filter({ hasText: "create succeeded" })
      .waitFor({ timeout: 20_000 });
    // The list follows WatchVms: the new VM shows up without a reload.
    const row = page.getByTestId("vms").locator("tbody tr", { hasText: "panel-made" });
    await row.waitFor({ timeout: 20_000 });
    assert.equal(await rows.count(), before + 1);
    assert.match((await row.textContent()) ?? "", /running/);
    await shot(page, "vm-create");
    // A change made elsewhere (hvctl, another user) shows up too.
    const settled = async (op: { id: string }) =>
      eventually(
        async () =>
          assert.equal(
            (await vms.getOperation({ operationId: op.id })).state,
            VmOperationState.SUCCEEDED,
          ),
        { timeoutMs: 20_000 },
      );
    await settled(await vms.stopVm({ vmId: "panel-made", force: true }));
    await row.filter({ hasText: "stopped" }).waitFor({ timeout: 20_000 });
    await settled(await vms.startVm({ vmId: "panel-made" }));
    await row.filter({ hasText: "running" }).waitFor({ timeout: 20_000 });
    await row.getByRole("link", { name: "panel-made" }).click();
    await page.getByRole("heading", { name: "Power" }).waitFor();
    assert.deepEqual(await axe(page), [], "vm detail");
    await page.getByRole("button", { name: "Stop", exact: true }).click();
    const state = page.getByTestId("vm-operation").getByTestId("operation-state");
    await page.getByTestId("vm-operation").locator("p").first().waitFor();
    assert.equal(await page.getByTestId("vm-refusal").count(), 0, "the stop was accepted");
    await state.filter({ hasText: "stop succeeded" }).waitFor({ timeout: 20_000 });
    assert.equal((await vms.getVm({ vmId: "panel-made" })).state, VmState.STOPPED);
    // The detail is drawn again with the new state, the outcome still in view.
    await page.locator("dd", { hasText: /^stopped$/ }).waitFor();
    await state.filter({ hasText: "stop succeeded" }).waitFor();
    await page.getByRole("button", { name: "Start", exact: true }).click();
    await state.filter({ hasText: "start succeeded" }).waitFor({ timeout: 20_000 });
    await page.locator("dd", { hasText: /^running$/ }).waitFor();
    assert.equal((await vms.getVm({ vmId: "panel-made" })).state, VmState.RUNNING);
    await shot(page, "vm-detail");
    assert.deepEqual(cspViolations, []);
  });

  it("shows a viewer the refusal of a stop, and the VM keeps running", async () => {
    const all = (await admin.client(VmService).listVms({ pageSize: 500 })).vms;
    const mine = all.find((v) => v.tenant === "acme" && v.state === VmState.RUNNING);
    assert.ok(mine, "a running acme VM");
    const page = await newPage();
    await signIn(page, "acme-ann", PASSWORD);
    await page.goto(`${url}#/vms/${mine.id}`);
    await page.getByRole("button", { name: "Stop", exact: true }).click();
    const refusal = page.getByTestId("vm-refusal");
    await refusal.waitFor();
    assert.match(
      (await refusal.textContent()) ?? "",
      /refused, your roles do not allow this: permission denied/,
    );
    await shot(page, "vm-refused");
    const after = await admin.client(VmService).getVm({ vmId: mine.id });
    assert.equal(after.state, VmState.RUNNING, "nothing changed");
  });

  it("refuses a request another origin makes with the user's browser", async () => {
    const page = await newPage();
    await signIn(page, "admin", adminPassword);
    await page.route("https://evil.example/**", (route) =>
      route.fulfill({
        contentType: "text/html",
        body: "<!doctype html><title>evil</title><p>evil</p>",
      }),
    );
    await page.goto("https://evil.example/");
    const path = `${url}rpc/debvisor.v1.NodeService/CordonNode`;
    const outcome = await page.evaluate(async (target) => {
      const results: string[] = [];
      // With the panel's header: the browser's CORS preflight fails.
      try {
        const r = await fetch(target, {
          method: "POST",
          credentials: "include",
          headers: { "content-type": "application/json", "x-debvisor-csrf": "1" },
          body: '{"id":{"id":"node-02"}}',
        });
        results.push(`sent ${r.status}`);
      } catch {
        results.push("blocked");
      }
      // A "simple" request needs no preflight but lacks the header (and the SameSite cookies).
      try {
        const r = await fetch(target, {
          method: "POST",
          mode: "no-cors",
          credentials: "include",
          headers: { "content-type": "text/plain" },
          body: '{"id":{"id":"node-02"}}',
        });
        results.push(r.type);
      } catch {
        // Cross-Origin-Resource-Policy hides even the opaque answer.
        results.push("blocked");
      }
      return results;
    }, path);
    assert.equal(outcome[0], "blocked");
    const node = await admin.client(NodeService).getNode({ id: { id: "node-02" } });
    assert.equal(node.summary?.cordoned, false, "nothing changed");
  });

  it("ends the session when a rotated refresh token is used again", async () => {
    const page = await newPage();
    await signIn(page, "acme-ann", PASSWORD);
    const context = page.context();
    const cookie = async () =>
      (await context.cookies()).find((c) => c.name === "__Host-dv_refresh")?.value;
    const stolen = await cookie();
    assert.ok(stolen);
    // Rotated twice: the token rotated away last has a grace for two tabs refreshing at once.
    const refresh = () =>
      page.evaluate(
        async () =>
          (await fetch("/auth/refresh", { method: "POST", headers: { "x-debvisor-csrf": "1" } }))
            .status,
      );
    assert.equal(await refresh(), 200);
    assert.equal(await refresh(), 200);
    assert.notEqual(await cookie(), stolen);
    const thief = panelBrowser(url, ca);
    thief.cookies.set("__Host-dv_refresh", stolen);
    assert.equal((await thief.auth("refresh", {})).status, 401);
    await page.reload();
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    await shot(page, "session-ended");
  });
});
