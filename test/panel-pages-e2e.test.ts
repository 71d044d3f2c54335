import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { MigrationService, MigrationState } from "../src/gen/debvisor/v1/migration_pb.js";
import { NodeService } from "../src/gen/debvisor/v1/node_pb.js";
import { StorageBackend, StorageService } from "../src/gen/debvisor/v1/storage_pb.js";
import { VmOperationState, VmService, VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";
import {
  axe,
  chromiumSkip,
  launchChromium,
  panelAdmin,
  shot,
  signIn,
} from "./helpers/panel-chromium.js";
import type { PanelBrowser } from "./helpers/panel-client.js";

const PASSWORD = "acme-ann-long-password";
/** Waits (15 s at most) until what `read` answers is in `state`. */
const reaches = (read: () => Promise<{ state: number }>, state: number) =>
  eventually(async () => assert.equal((await read()).state, state), { timeoutMs: 15_000 });

describe("web panel pages in Chromium: storage, overview alerts, charts, VM power", {
  skip: chromiumSkip(),
}, () => {
  let dir: string;
  let daemon: DaemonProcess;
  let url: string;
  let adminPassword: string;
  let browser: Browser;
  let admin: PanelBrowser;
  const contexts: BrowserContext[] = [];
  // One admin browser for every test: sign-ins from browsers an account does not know are rate limited.
  let adminPage: Page | undefined;
  const newPage = async (user = "admin"): Promise<Page> => {
    if (user === "admin" && adminPage !== undefined) return adminPage;
    const context = await browser.newContext({
      ignoreHTTPSErrors: true,
      viewport: { width: 1280, height: 800 },
    });
    contexts.push(context);
    const page = await context.newPage();
    page.on("dialog", (d) => void d.accept());
    await signIn(page, url, user, user === "admin" ? adminPassword : PASSWORD);
    if (user === "admin") adminPage = page;
    return page;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-panel-pages-"));
    daemon = await startDevDaemon(dir, {
      panel: { listen: "127.0.0.1:0" },
      // Heartbeats every second: the charts get points within the test.
      cluster: { heartbeatIntervalMs: 1000 },
      simulation: { migrationMs: 1500 },
      rbac: { bindings: [{ principal: "user:acme-ann", roles: ["viewer"], tenant: "acme" }] },
    });
    ({ url, adminPassword, admin } = await panelAdmin(dir, daemon, "acme-ann", PASSWORD));
    browser = await launchChromium();
  });
  after(async () => {
    for (const c of contexts) await c.close().catch(() => {});
    await browser?.close();
    daemon?.kill();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("lists datasets and images; a prune preview shows what would go, and prune removes exactly that", async () => {
    const storage = admin.client(StorageService);
    const vms = (await admin.client(VmService).listVms({ pageSize: 500 })).vms;
    const zfsVm = vms.find((v) => v.disks[0]?.backend === StorageBackend.BACKEND_ZFS);
    const rbdVm = vms.find((v) => v.disks[0]?.backend === StorageBackend.BACKEND_RBD);
    assert.ok(zfsVm?.disks[0] && rbdVm?.disks[0]);
    const dataset = zfsVm.disks[0];
    // A template of an RBD disk with a clone, for the images section.
    const template = await storage.createRbdTemplateSnapshot({
      image: rbdVm.disks[0],
      label: "golden",
    });
    await storage.cloneRbdFromTemplate({
      templateSnapshot: template.snapshot,
      newImage: { backend: StorageBackend.BACKEND_RBD, pool: "rbd", name: "panel-clone" },
    });
    const daily = async () =>
      (await storage.listSnapshots({ dataset })).snapshots
        .map((s) => s.ref?.snapshotName ?? "")
        .filter((n) => n.startsWith("daily-"));
    const before = await daily();
    assert.ok(before.length >= 3, `${before.length} daily snapshots`);

    const page = await newPage();
    await page.goto(`${url}#/storage`);
    const rows = page.getByTestId("dataset-list").locator("tbody tr");
    await rows.first().waitFor();
    const names = await rows.locator("td:first-child").allTextContents();
    assert.ok(names.some((n) => n.startsWith("zfs:")) && names.some((n) => n.startsWith("rbd:")));
    assert.equal(names.length, (await storage.listDatasets({ pageSize: 1000 })).datasets.length);
    await page.getByTestId("job-list").locator("tbody tr").first().waitFor();
    await page.getByTestId("chart-lag").locator("rect").first().waitFor({ state: "attached" });
    const clone = page.getByTestId("image-list").locator("tbody tr", { hasText: "golden" });
    await clone.filter({ hasText: "rbd:rbd/panel-clone" }).first().waitFor();
    assert.deepEqual(await axe(page), [], "storage");
    await shot(page, "storage");
    // The clone's own row: flatten it (it no longer depends on the template), then delete it.
    await page.getByRole("button", { name: "Flatten rbd:rbd/panel-clone" }).click();
    await page.getByText("rbd:rbd/panel-clone: flattened").waitFor();
    const flat = (await storage.listImages({})).images.find((i) => i.image?.name === "panel-clone");
    assert.equal(flat?.parent, undefined, "flattened: no parent");
    assert.equal(
      await page.getByRole("button", { name: "Flatten rbd:rbd/panel-clone" }).count(),
      0,
    );
    // The confirm dialog is accepted.
    await page.getByRole("button", { name: "Delete rbd:rbd/panel-clone" }).click();
    await page.getByText("rbd:rbd/panel-clone: deleted").waitFor();
    assert.ok(
      !(await storage.listImages({})).images.some((i) => i.image?.name === "panel-clone"),
      "the clone is gone",
    );

    const text = `zfs:${dataset.pool}/${dataset.name}`;
    await page.getByRole("link", { name: text }).click();
    await page.getByTestId("snapshot-list").waitFor();
    await page.getByLabel("Keep the newest").fill("1");
    await page.getByLabel("Only snapshots labelled").fill("daily");
    const prune = page.getByRole("button", { name: /^Prune/ });
    assert.equal(await prune.isDisabled(), true, "no prune before a preview");
    await page.getByRole("button", { name: "Preview prune" }).click();
    await page
      .getByTestId("prune-summary")
      .filter({ hasText: `Would remove ${before.length - 1} snapshots` })
      .waitFor();
    const previewed = await page
      .getByTestId("prune-list")
      .locator("tbody td:first-child")
      .allTextContents();
    assert.deepEqual(previewed, before.slice(0, -1), "the oldest go, the newest stays");
    assert.deepEqual(await daily(), before, "a preview removes nothing");
    assert.deepEqual(await axe(page), [], "dataset");
    await shot(page, "dataset-prune-preview");
    // Changing the policy asks for a new preview.
    await page.getByLabel("Keep the newest").fill("2");
    assert.equal(await prune.isDisabled(), true);
    await page.getByLabel("Keep the newest").fill("1");
    await page.getByRole("button", { name: "Preview prune" }).click();
    await prune.and(page.locator(":enabled")).waitFor();
    await prune.click();
    await page
      .getByTestId("prune-summary")
      .filter({ hasText: `Removed ${before.length - 1} snapshots` })
      .waitFor();
    assert.deepEqual(await daily(), before.slice(-1));
    await page
      .getByTestId("snapshot-list")
      .locator("tbody tr", { hasText: previewed[0] ?? "?" })
      .waitFor({ state: "detached" });
  });

  it("shows a tenant user only its datasets, and the API's refusal of replication and prune", async () => {
    const all = (await admin.client(StorageService).listDatasets({ pageSize: 1000 })).datasets;
    const mine = all.filter((d) => d.tenant === "acme");
    assert.ok(mine.length > 0 && mine.length < all.length);
    const page = await newPage("acme-ann");
    await page.goto(`${url}#/storage`);
    const tenants = page.getByTestId("dataset-list").locator("tbody td:nth-child(4)");
    await tenants.first().waitFor();
    assert.deepEqual(
      [...new Set(await tenants.allTextContents())],
      ["acme"],
      "only acme's datasets",
    );
    assert.equal(await tenants.count(), mine.length);
    await page
      .getByTestId("replication")
      .getByRole("alert")
      .filter({ hasText: /refused, your roles do not allow this/ })
      .waitFor();
    const zfs = mine.find((d) => d.dataset?.backend === StorageBackend.BACKEND_ZFS);
    assert.ok(zfs?.dataset);
    // Compared by name: the daemon's own schedules may add a snapshot meanwhile; a prune removes.
    const names = async () =>
      (await admin.client(StorageService).listSnapshots({ dataset: zfs.dataset })).snapshots.map(
        (x) => x.ref?.snapshotName ?? "",
      );
    const before = await names();
    await page.goto(`${url}#/storage/zfs:${zfs.dataset.pool}/${zfs.dataset.name}`);
    await page.getByTestId("snapshot-list").waitFor();
    await page.getByLabel("Keep the newest").fill("1");
    await page.getByRole("button", { name: "Preview prune" }).click();
    await page
      .getByTestId("prune-result")
      .getByRole("alert")
      .filter({ hasText: /refused, your roles do not allow this.*PERMISSION_DENIED/ })
      .waitFor();
    await shot(page, "storage-tenant-refused");
    // The overview says what it leaves out for this user, and why.
    await page.goto(`${url}#/`);
    await page.getByText(/Not shown, your roles do not allow it: replication jobs/).waitFor();
    const after = new Set(await names());
    assert.deepEqual(
      before.filter((n) => !after.has(n)),
      [],
      "nothing removed",
    );
  });

  it("draws per-node CPU and memory charts from heartbeats, with a table for each", async () => {
    const page = await newPage();
    await page.goto(`${url}#/`);
    const cpu = page.getByTestId("chart-cpu");
    // Heartbeats come every second: after a few, each node's line has points.
    await eventually(
      async () => {
        const points = await cpu
          .locator("polyline")
          .evaluateAll((ls) => ls.map((l) => Number(l.getAttribute("data-points"))));
        assert.equal(points.length, 3, "one line per node");
        assert.ok(
          points.every((p) => p >= 3),
          `points ${points}`,
        );
      },
      { timeoutMs: 15_000 },
    );
    assert.match(
      (await cpu.locator("svg").getAttribute("aria-label")) ?? "",
      /CPU load per node .*node-01 now \d/,
    );
    // The table is a keyboard press away.
    await cpu.getByRole("button", { name: "Show CPU load per node as a table" }).focus();
    await page.keyboard.press("Enter");
    const rows = cpu.locator("table tbody tr");
    assert.equal(await rows.count(), 3, "one row per node");
    assert.match((await rows.first().textContent()) ?? "", /^node-01\d/);
    // Heartbeats redraw the chart: the table stays open and the focus stays on its button.
    const points = async () =>
      Number(await cpu.locator("polyline").first().getAttribute("data-points"));
    const seen = await points();
    // Heartbeats come every second; a loaded machine (browser, daemon, other tests) is slower.
    await eventually(async () => assert.ok((await points()) > seen), { timeoutMs: 20_000 });
    assert.equal(await rows.count(), 3);
    assert.equal(
      await page.evaluate("document.activeElement?.textContent"),
      "Hide the table of CPU load per node",
    );
    // A flat line has no height: attached, not "visible".
    await page.getByTestId("chart-mem").locator("polyline").first().waitFor({ state: "attached" });
    assert.deepEqual(await axe(page), [], "overview with charts");
    await shot(page, "overview-charts");
    // A node's page charts that node, from the same history.
    await page.getByRole("link", { name: "node-02" }).click();
    await page.waitForURL(/#\/nodes\/node-02$/);
    // The node page's own chart (the overview's, still attached for a moment, charts every node).
    const lines = page
      .getByTestId("chart-cpu")
      .filter({ has: page.locator('svg[aria-label^="CPU load of node-02"]') })
      .locator("polyline");
    await lines.first().waitFor({ state: "attached" });
    assert.equal(await lines.count(), 1);
    assert.ok(Number(await lines.first().getAttribute("data-points")) >= 3);
    assert.match(
      (await page.getByTestId("chart-cpu").locator("svg").getAttribute("aria-label")) ?? "",
      /^CPU load of node-02 .*node-02 now/,
    );
  });

  it("shows a conflict (a VM reported by a second node) among the alerts, live", async () => {
    const page = await newPage();
    await page.goto(`${url}#/`);
    await page.getByTestId("ha-summary").waitFor();
    const vms = admin.client(VmService);
    const vm = (await vms.listVms({ pageSize: 500 })).vms.find(
      (v) => v.state === VmState.RUNNING && v.tenant !== "acme",
    );
    assert.ok(vm);
    // A node that reports a stopped copy of a VM another node runs.
    const nodes = admin.client(NodeService);
    await nodes.registerNode({ id: { id: "node-09" }, hostname: "node-09" });
    const now = Date.now();
    await nodes.heartbeat({
      nodeId: { id: "node-09" },
      timestamp: { seconds: BigInt(Math.floor(now / 1000)), nanos: 0 },
      vms: [{ id: vm.id, name: vm.name, state: VmState.STOPPED, nodeId: { id: "node-09" } }],
    });
    const alert = page.getByTestId("alert-list").locator("tbody tr", { hasText: "Conflict" });
    await alert.filter({ hasText: vm.id }).waitFor({ timeout: 20_000 });
    assert.match((await alert.textContent()) ?? "", /stale copies on node-09/);
    await page
      .getByTestId("conflict-list")
      .locator("tbody tr", { hasText: vm.id })
      .filter({ hasText: "node-09" })
      .waitFor();
    // The event arrives on the live event list too.
    await page
      .getByTestId("event-list")
      .locator("tbody tr", { hasText: "Conflict" })
      .first()
      .waitFor({ timeout: 20_000 });
    assert.deepEqual(await axe(page), [], "overview with alerts");
    await shot(page, "overview-alerts");
    // The README's overview: alerts, nodes and the charts.
    await shot(page, "overview-top", 900);
  });

  it("charts each migration's throughput", async () => {
    const vm = (await admin.client(VmService).listVms({ pageSize: 500 })).vms.find(
      (v) => v.liveMigratable && v.state === VmState.RUNNING && v.staleCopyNodes.length === 0,
    );
    assert.ok(vm);
    const migrations = admin.client(MigrationService);
    // A target named: node-09 (registered by the conflict test) hosts nothing.
    const target = ["node-01", "node-02", "node-03"].find((n) => n !== vm.nodeId?.id);
    const m = await migrations.startMigration({
      vm: { vmId: vm.id },
      target: { nodeId: { id: target ?? "" } },
    });
    await reaches(
      () => migrations.getMigration({ migrationId: m.migrationId }),
      MigrationState.SUCCEEDED,
    );
    const page = await newPage();
    await page.goto(`${url}#/migrations`);
    const chart = page.getByTestId("chart-throughput");
    await chart.locator("rect").first().waitFor();
    assert.match((await chart.locator("svg").getAttribute("aria-label")) ?? "", /\/s/);
    assert.deepEqual(await axe(page), [], "migrations");
    await shot(page, "migrations-throughput");
  });

  it("reboots and deletes a VM from its page", async () => {
    const vms = admin.client(VmService);
    const created = await vms.createVm({
      vmId: "panel-doomed",
      spec: { name: "panel-doomed", vcpus: 1, memoryBytes: 256n * 1024n * 1024n },
      nodeId: { id: "node-01" },
      start: true,
    });
    await reaches(() => vms.getOperation({ operationId: created.id }), VmOperationState.SUCCEEDED);
    const page = await newPage();
    await page.goto(`${url}#/vms/panel-doomed`);
    const state = page.getByTestId("vm-operation").getByTestId("operation-state");
    await page.getByRole("button", { name: "Reboot" }).click();
    await state.filter({ hasText: "reboot succeeded" }).waitFor({ timeout: 15_000 });
    assert.equal((await vms.getVm({ vmId: "panel-doomed" })).state, VmState.RUNNING);
    await page.getByRole("button", { name: "Force off" }).click();
    await state.filter({ hasText: "stop succeeded" }).waitFor({ timeout: 15_000 });
    await page.locator("dd", { hasText: /^stopped$/ }).waitFor();
    assert.equal((await vms.getVm({ vmId: "panel-doomed" })).state, VmState.STOPPED);
    await page.getByRole("button", { name: "Delete" }).click();
    // Once deleted, the page goes back to the list, without the VM.
    await page.waitForURL(/#\/vms$/, { timeout: 15_000 });
    await page.getByTestId("vms").locator("tbody tr").first().waitFor();
    // Gone from the live list once its node's next report says so (a heartbeat at most).
    await page
      .getByTestId("vms")
      .locator("tbody tr", { hasText: "panel-doomed" })
      .waitFor({ state: "detached", timeout: 20_000 });
    await assert.rejects(
      vms.getVm({ vmId: "panel-doomed" }),
      (err: unknown) => err instanceof ConnectError && err.code === Code.NotFound,
    );
  });

  it("refuses a new disk of size 0 in the create form, which would attach a left-behind dataset", async () => {
    const vms = admin.client(VmService);
    const pool = (await vms.listVms({ pageSize: 500 })).vms.find(
      (v) => v.disks[0]?.backend === StorageBackend.BACKEND_ZFS,
    )?.disks[0]?.pool;
    assert.ok(pool !== undefined);
    // A VM deleted earlier left its disk behind, data and all.
    const old = await vms.createVm({
      vmId: "panel-old",
      spec: {
        name: "panel-old",
        vcpus: 1,
        memoryBytes: 256n * 1024n * 1024n,
        disks: [
          {
            dataset: { backend: StorageBackend.BACKEND_ZFS, pool, name: "panel-old-d0" },
            sizeBytes: 1024n ** 3n,
          },
        ],
      },
      nodeId: { id: "node-01" },
    });
    await reaches(() => vms.getOperation({ operationId: old.id }), VmOperationState.SUCCEEDED);
    const gone = await vms.deleteVm({ vmId: "panel-old", force: true });
    await reaches(() => vms.getOperation({ operationId: gone.id }), VmOperationState.SUCCEEDED);
    // The operator asks for a new disk of that name and types no size but 0.
    const page = await newPage();
    await page.goto(`${url}#/vms`);
    await page.locator("#new-vm-id").fill("panel-new");
    await page.locator("#new-vm-disks").fill(`${pool}/panel-old-d0=0`);
    await page.locator("#new-vm-node").selectOption("node-01");
    await page.getByRole("button", { name: "Create VM" }).click();
    await page
      .getByTestId("create-error")
      .or(page.getByTestId("create-operation").locator("*").first())
      .first()
      .waitFor({ timeout: 15_000 });
    const created = await vms.getVm({ vmId: "panel-new" }).catch(() => undefined);
    assert.equal(
      created,
      undefined,
      `panel-new was created with the left-behind dataset ${JSON.stringify(created?.disks)}`,
    );
  });
});
