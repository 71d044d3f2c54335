import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import {
  createServiceClient,
  openChannel,
  type ResolvedContext,
  resolveContext,
} from "../src/client/index.js";
import { AccessService } from "../src/gen/debvisor/v1/access_pb.js";
import { VmService } from "../src/gen/debvisor/v1/vm_pb.js";
import { type VmEvent, WatchEventType, WatchService } from "../src/gen/debvisor/v1/watch_pb.js";
import { type DaemonProcess, HVCTL_BIN, startDevDaemon } from "./helpers/daemon-process.js";
import { bearerContext, callOutcome } from "./helpers/dev-clients.js";
import { eventually } from "./helpers/eventually.js";
import { hvctlInProcess, runHvctlInProcess } from "./helpers/hvctl-in-process.js";

/**
 * Lists an operator can see, sort, filter and watch, and the RBD images it
 * can delete and flatten, against one dev daemon whose node-03 is cut off
 * a few seconds after start (its heartbeats stop: it goes NotReady).
 */
describe("inventory and watch: hvctl and the API on the dev cluster", () => {
  let dir: string;
  let config: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  const channels: grpc.Client[] = [];
  const hvctl = (...args: string[]) => hvctlInProcess(config, ...args);
  const ok = async (...args: string[]) => {
    const r = await hvctl(...args);
    assert.equal(r.code, 0, `hvctl ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const json = async <T>(...args: string[]) => JSON.parse(await ok("-o", "json", ...args)) as T;
  /** A credential confined to `tenant`, with `roles` there. */
  const tenantKey = async (tenant: string, roles: string[]) => {
    const ch = openChannel(admin);
    channels.push(ch);
    const access = createServiceClient(AccessService, ch);
    return (await access.createApiKey({ principal: `${tenant}-watcher`, roles, tenant })).token;
  };
  const clients = (ctx: ResolvedContext) => {
    const ch = openChannel(ctx);
    channels.push(ch);
    return {
      vms: createServiceClient(VmService, ch),
      watch: createServiceClient(WatchService, ch),
    };
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-inventory-watch-"));
    daemon = await startDevDaemon(dir, {
      simulation: { faults: [{ kind: "partition", node: "node-03", afterMs: 15_000 }] },
      cluster: {
        heartbeatIntervalMs: 1000,
        heartbeatMissedIntervals: 2,
        fenceDelayMs: 60_000,
        failover: { enabled: false },
      },
    });
    config = join(dir, "hvctl.yaml");
    admin = resolveContext(config, "dev");
  });
  after(() => {
    for (const ch of channels) ch.close();
    daemon?.kill();
  });

  it("node list --watch in a pipe prints the list, then a line when node-03 goes NotReady", async () => {
    const proc = spawn(
      process.execPath,
      [HVCTL_BIN, "--config", config, "node", "list", "--watch"],
      {
        env: { ...process.env, DEBVISOR_CONFIG: "", DEBVISOR_CONTEXT: "", NO_COLOR: "1" },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let out = "";
    proc.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    try {
      await eventually(
        () => assert.match(out, /^MODIFIED\s+node-03\s.*\sNotReady\s/m, `stdout so far:\n${out}`),
        { timeoutMs: 45_000 },
      );
      const lines = out.split("\n");
      assert.match(lines[0] ?? "", /^EVENT\s+ID\s+HOSTNAME\s/);
      assert.match(lines[1] ?? "", /^ADDED\s+node-01\s.*\sReady\s/);
      assert.ok(
        lines.findIndex((l) => /^ADDED\s+node-03\s.*\sReady\s/.test(l)) <
          lines.findIndex((l) => /^MODIFIED\s+node-03\s.*\sNotReady\s/.test(l)),
        "node-03 first listed Ready, then a change to NotReady",
      );
    } finally {
      proc.kill("SIGINT");
    }
  });

  it("sorts by any column (numbers as numbers) and names the columns when one is unknown", async () => {
    const vms = await json<{ vms: { id: string; memoryBytes: string }[] }>(
      "vm",
      "list",
      "--sort-by",
      "memory",
    );
    const memory = vms.vms.map((v) => Number(v.memoryBytes));
    assert.ok(memory.length > 3);
    assert.deepEqual(
      memory,
      [...memory].sort((a, b) => a - b),
    );
    const table = await ok("vm", "list", "--sort-by", "MEMORY");
    const ids = table
      .trim()
      .split("\n")
      .slice(1)
      .map((l) => l.split(/\s+/)[0]);
    assert.deepEqual(
      ids,
      vms.vms.map((v) => v.id),
    );
    const bad = await hvctl("node", "list", "--sort-by", "colour");
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--sort-by: no column "colour"; one of id, hostname, .*last-seen/);
  });

  it("labels VMs and selects them with =, != and existence; a bad selector is a usage error", async () => {
    await ok("vm", "label", "vm-001", "tier=web", "env=prod");
    await ok("vm", "label", "vm-002", "tier=web", "env=test");
    const ids = async (selector: string) =>
      (await json<{ vms: { id: string }[] }>("vm", "list", "-l", selector)).vms.map((v) => v.id);
    assert.deepEqual(await ids("tier=web"), ["vm-001", "vm-002"]);
    assert.deepEqual(await ids("tier=web,env!=prod"), ["vm-002"]);
    assert.ok(!(await ids("!tier")).includes("vm-001"));
    await ok("vm", "label", "vm-002", "env-");
    assert.deepEqual(await ids("tier=web,!env"), ["vm-002"]);
    assert.match(await ok("vm", "get", "vm-001", "-o", "json"), /"tier": "web"/);
    const nodes = await json<{ nodes: unknown[] }>(
      "node",
      "list",
      "-l",
      "debvisor.io/simulated=true,zone!=nowhere",
    );
    assert.equal(nodes.nodes.length, 3);
    const bad = await hvctl("vm", "list", "-l", "tier=web,bad key");
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /selector: "bad key"/);
  });

  it("--tenant narrows a cluster-wide caller's lists and is refused to a tenant's credential", async () => {
    const acme = await json<{ vms: { tenant: string }[] }>("vm", "list", "--tenant", "acme");
    assert.ok(acme.vms.length > 0);
    assert.ok(acme.vms.every((v) => v.tenant === "acme"));
    const datasets = await json<{ datasets: { tenant: string }[] }>(
      "dataset",
      "list",
      "--tenant",
      "acme",
    );
    assert.ok(datasets.datasets.every((d) => d.tenant === "acme"));
    const token = await tenantKey("acme", ["viewer"]);
    const confined = clients(bearerContext(admin, token));
    for (const tenant of ["acme", "globex", "no-such-tenant"]) {
      const got = await callOutcome(confined.vms.listVms({ tenant }));
      assert.deepEqual(got, { code: 7, reason: "TENANT_FILTER_DENIED" }, tenant);
    }
    // Without the filter the same credential lists its own tenant's.
    assert.equal((await callOutcome(confined.vms.listVms({}))).code, 0);
  });

  it("a tenant's watch shows only its VMs: another tenant's changes never, its own leaving as DELETED", async () => {
    const token = await tenantKey("acme", ["viewer"]);
    const confined = clients(bearerContext(admin, token));
    const stop = new AbortController();
    const events: VmEvent[] = [];
    const stream = confined.watch.watchVms({}, { signal: stop.signal });
    const reading = (async () => {
      try {
        for await (const e of stream) events.push(e);
      } catch {
        // cancelled below
      }
    })();
    const ids = (type: WatchEventType) =>
      events.filter((e) => e.header?.type === type).map((e) => e.vm?.id);
    try {
      await eventually(() => assert.ok(ids(WatchEventType.SYNCED).length > 0));
      assert.ok(ids(WatchEventType.ADDED).includes("vm-001"));
      // Another tenant's VM changes, then one of acme's moves to globex.
      await ok("vm", "label", "vm-004", "touched=yes");
      await ok("vm", "set-tenant", "vm-006", "globex");
      await eventually(() => assert.deepEqual(ids(WatchEventType.DELETED), ["vm-006"]), {
        timeoutMs: 15_000,
      });
      // globex's VM comes into acme's view, and leaves it again.
      await ok("vm", "set-tenant", "vm-004", "acme");
      await eventually(() => assert.ok(ids(WatchEventType.ADDED).includes("vm-004")));
      await ok("vm", "set-tenant", "vm-004", "globex");
      await eventually(() => assert.ok(ids(WatchEventType.DELETED).includes("vm-004")));
      for (const e of events)
        if (e.vm !== undefined)
          assert.equal(e.vm.tenant, "acme", `event ${JSON.stringify(e.vm.id)}`);
      // Resuming from the last revision sends only what changed since, still only acme's.
      const last = events.filter((e) => e.header?.type === WatchEventType.SYNCED).at(-1);
      stop.abort();
      await reading;
      await ok("vm", "set-tenant", "vm-006", "acme");
      await ok("vm", "label", "vm-008", "touched=yes");
      const again: VmEvent[] = [];
      const resume = new AbortController();
      const timer = setTimeout(() => resume.abort(), 10_000);
      try {
        for await (const e of confined.watch.watchVms(
          { from: { sinceRevision: last?.header?.revision ?? "" } },
          { signal: resume.signal },
        )) {
          again.push(e);
          if (e.vm?.id === "vm-006") break;
        }
      } finally {
        clearTimeout(timer);
        resume.abort();
      }
      assert.deepEqual(
        again.map((e) => `${WatchEventType[e.header?.type ?? 0]} ${e.vm?.id ?? ""}`).slice(-1),
        ["ADDED vm-006"],
      );
      assert.ok(again.every((e) => e.vm === undefined || e.vm.tenant === "acme"));
      assert.ok(!again.some((e) => e.vm?.id === "vm-001"), "a resumed watch does not resend");
    } finally {
      stop.abort();
    }
  });

  it("lists images with parent and templates; delete and flatten, with their refusals", async () => {
    const tpl = (
      await json<{ snapshot: { snapshotName: string } }>(
        "image",
        "template",
        "rbd:rbd/vm-001-disk0",
        "--label",
        "golden",
      )
    ).snapshot.snapshotName;
    await ok(
      "image",
      "clone",
      `rbd:rbd/vm-001-disk0@${tpl}`,
      "--to",
      "rbd:rbd/acme-web-02",
      "--tenant",
      "acme",
    );
    const listed = await ok("image", "list");
    assert.match(listed, /^NAME\s+TENANT\s+VM\s+SIZE\s+PARENT\s+TEMPLATES/);
    assert.match(
      listed,
      new RegExp(
        `^rbd:rbd/acme-web-02\\s+acme\\s+-\\s+\\S+ GiB\\s+rbd:rbd/vm-001-disk0@${tpl}\\s`,
        "m",
      ),
    );
    assert.match(
      listed,
      new RegExp(`^rbd:rbd/vm-001-disk0\\s+acme\\s+vm-001\\s.*${tpl} \\(1 clone\\)`, "m"),
    );
    // A template of the clone, cloned again: the clone now has a clone of its own.
    const tpl2 = (
      await json<{ snapshot: { snapshotName: string } }>("image", "template", "rbd:rbd/acme-web-02")
    ).snapshot.snapshotName;
    await ok(
      "image",
      "clone",
      `rbd:rbd/acme-web-02@${tpl2}`,
      "--to",
      "rbd:rbd/acme-web-03",
      "--tenant",
      "acme",
    );
    const refused = await hvctl("image", "delete", "rbd:rbd/acme-web-02");
    assert.equal(refused.code, 1);
    assert.match(
      refused.stderr,
      /image has clones.*hvctl image flatten rbd:POOL\/CLONE.*FAILED_PRECONDITION/,
    );
    const inUse = await hvctl("image", "delete", "rbd:rbd/vm-001-disk0");
    assert.equal(inUse.code, 1);
    assert.match(inUse.stderr, /image is a vm's disk/);
    const snapRefused = await hvctl("snapshot", "delete", `rbd:rbd/vm-001-disk0@${tpl}`);
    assert.equal(snapRefused.code, 1);
    assert.match(snapRefused.stderr, /snapshot has clones: flatten \(hvctl image flatten/);
    // Another tenant's clone of acme's template: its list names no parent (acme's disk and
    // template stay hidden), and the clone shows as its own image.
    await ok(
      "image",
      "clone",
      `rbd:rbd/vm-001-disk0@${tpl}`,
      "--to",
      "rbd:rbd/globex-probe",
      "--tenant",
      "globex",
    );
    const globexList = await hvctlWithToken(await tenantKey("globex", ["viewer"]), "image", "list");
    assert.equal(globexList.code, 0, globexList.stderr);
    assert.match(globexList.stdout, /^rbd:rbd\/globex-probe\s+globex\s+-\s+\S+ GiB\s+-\s/m);
    assert.doesNotMatch(globexList.stdout, /vm-001|acme/);
    await ok("image", "delete", "rbd:rbd/globex-probe");
    // Flatten what depends on a template; then the images and the template can go.
    await ok("image", "flatten", "rbd:rbd/acme-web-03");
    const notAClone = await hvctl("image", "flatten", "rbd:rbd/acme-web-03");
    assert.equal(notAClone.code, 1);
    assert.match(notAClone.stderr, /image is not a clone/);
    assert.match(
      await ok("image", "delete", "rbd/acme-web-02"),
      /image rbd:rbd\/acme-web-02 deleted/,
    );
    const remaining = await ok("image", "list");
    assert.doesNotMatch(remaining, /acme-web-02/);
    assert.match(remaining, /^rbd:rbd\/acme-web-03\s+acme\s+-\s+\S+ GiB\s+-\s/m);
    await ok("snapshot", "delete", `rbd:rbd/vm-001-disk0@${tpl}`);
    await ok("image", "delete", "rbd:rbd/acme-web-03");
    // A tenant's list and refusals: another tenant's image is not found, like a missing one.
    const token = await tenantKey("globex", ["operator"]);
    const globex = await hvctlWithToken(token, "image", "delete", "rbd:rbd/vm-001-disk0");
    assert.equal(globex.code, 5, globex.stderr);
  });

  it("names round-trip: what vm get prints as a disk is what snapshot, dataset and image commands take", async () => {
    for (const vm of ["vm-001", "vm-002"]) {
      const shown = /^disks:\s+(\S+)$/m.exec(await ok("vm", "get", vm))?.[1] ?? "";
      assert.match(shown, /^(zfs|rbd):[a-z]+\/vm-00\d-disk0$/);
      assert.match(await ok("snapshot", "list", shown), /^NAME\s+AGE/);
      await ok("snapshot", "create", shown, "--label", "roundtrip");
      assert.match(await ok("dataset", "list"), new RegExp(`^${shown}\\s`, "m"));
      if (shown.startsWith("rbd:"))
        assert.match(await ok("image", "list"), new RegExp(`^${shown}\\s`, "m"));
    }
  });

  /** hvctl in process with a bearer token instead of the context's credential. */
  const hvctlWithToken = (token: string, ...args: string[]) =>
    runHvctlInProcess(["--config", config, ...args], { NO_COLOR: "1", DEBVISOR_TOKEN: token });
});
