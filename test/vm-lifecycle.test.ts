// VMs as desired state: create, start, stop, reboot and delete through hvctl
// against a dev daemon, on one of its own simulated nodes (the daemon's local
// operation runner) and on a node served by a debvisor-agent process; the
// refusals (a VM nobody holds, another tenant's VM, invalid specs) and the
// audit records of each call and each operation's outcome.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { type ResolvedContext, resolveContext } from "../src/client/index.js";
import { StorageBackend } from "../src/gen/debvisor/v1/storage_pb.js";
import { type VmInfo, VmOperationState } from "../src/gen/debvisor/v1/vm_pb.js";
import { type AgentProcess, enrollAgent, startAgent } from "./helpers/agent-process.js";
import { agentStatus } from "./helpers/agent-status.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { bearerContext, callOutcome, devClients } from "./helpers/dev-clients.js";
import { eventually } from "./helpers/eventually.js";
import { hvctlInProcess } from "./helpers/hvctl-in-process.js";

const GIB = 1024n ** 3n;
const NOT_FOUND = 5;
const INVALID_ARGUMENT = 3;
const PERMISSION_DENIED = 7;
const FAILED_PRECONDITION = 9;

describe("VMs as desired state through hvctl", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  let agent: AgentProcess;
  const channels: grpc.Client[] = [];
  /** hvctl in this process; one that still waits after 30 s fails the test (an operation nobody runs). */
  const hv = async (...args: string[]) => {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`hvctl ${args.join(" ")}: no end in 30 s`)),
        30_000,
      );
    });
    try {
      return await Promise.race([hvctlInProcess(join(dir, "hvctl.yaml"), ...args), late]);
    } finally {
      clearTimeout(timer);
    }
  };
  const root = () => devClients(admin, channels);

  /** Where the embedded simulation says each VM is, and its state. */
  const simWorld = () =>
    new Map(
      (
        JSON.parse(readFileSync(join(dir, "simulation.json"), "utf8")) as {
          vms: { info: { id: string }; node: string; state: string }[];
        }
      ).vms.map((v) => [v.info.id, { node: v.node, state: v.state }]),
    );
  /** What the agent's node really holds (what debvisor-agent status prints, read here). */
  const agentDomains = async (node = "node-04") =>
    new Map((await agentStatus(join(dir, node))).domains.map((d) => [d.id, d.state]));
  const actions = () =>
    readFileSync(join(dir, "node-04", "sim-actions.log"), "utf8")
      .trim()
      .split("\n");
  const audit = () =>
    readFileSync(join(dir, "audit.log"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, string>);
  /** The operation id hvctl printed on stderr ("operation op-...: ..."). */
  const opId = (stderr: string) => /operation ((?:op|rq)-[0-9a-f]+)/.exec(stderr)?.[1] ?? "";
  /** Runs hvctl and expects success, one operation, and output ending with a newline. */
  const ok = async (...args: string[]) => {
    const r = await hv(...args);
    assert.equal(r.code, 0, `hvctl ${args.join(" ")}: ${r.stderr}`);
    assert.ok(r.stdout.endsWith("\n"), `stdout ends with a newline: ${JSON.stringify(r.stdout)}`);
    return { ...r, op: opId(r.stderr) };
  };
  /** Waits for the vm.operation audit record of `id`. */
  const outcome = (id: string) =>
    eventually(
      async () => {
        const rec = audit().find((r) => r.event === "vm.operation" && r.requestId === id);
        assert.ok(rec !== undefined, `no vm.operation record for ${id}`);
        return rec;
      },
      { timeoutMs: 10_000, intervalMs: 100 },
    );

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-vmlife-"));
    daemon = await startDevDaemon(dir, {
      cluster: { heartbeatIntervalMs: 1000 },
      // Not about rate limits: one admin's calls come faster than the default 20/s here.
      rateLimit: { perPrincipal: { ratePerSecond: 100_000, burst: 100_000 } },
    });
    admin = resolveContext(join(dir, "hvctl.yaml"), "dev");
    const hvctl = (...args: string[]) => hvctlInProcess(join(dir, "hvctl.yaml"), ...args);
    const agentDir = await enrollAgent(hvctl, daemon.grpcAddress, dir, "node-04");
    agent = startAgent([
      ...["--dir", agentDir, "--server", daemon.grpcAddress, "--driver", "sim"],
      ...["--sim-vms", "2"],
    ]);
    await agent.waitLog("connected to the control plane");
  });
  after(() => {
    for (const ch of channels) ch.close();
    agent?.proc.kill("SIGKILL");
    daemon?.kill();
  });

  it("creates, starts, stops, reboots and deletes a VM on the daemon's own simulated node", async () => {
    const created = await ok(
      ...["vm", "create", "web-77", "--cpu", "2", "--memory", "2GiB", "--node", "node-02"],
      ...["--new-disk", "rbd:rbd/web-77-disk0=10GiB", "--ha"],
    );
    assert.match(created.stdout, /^create web-77 on node-02: succeeded\n$/);
    assert.deepEqual(simWorld().get("web-77"), { node: "node-02", state: "stopped" });
    const got = JSON.parse((await ok("vm", "get", "web-77", "-o", "json")).stdout) as {
      managed: boolean;
      ha: boolean;
    };
    assert.equal(got.managed, true);
    assert.equal(got.ha, true);

    await ok("vm", "start", "web-77");
    assert.equal(simWorld().get("web-77")?.state, "running");
    // Deleting a running VM without --force is refused with a coded one-line error; nothing changes.
    const refused = await hv("vm", "delete", "web-77");
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^hvctl: .*\(FAILED_PRECONDITION, request [0-9a-f-]+\)\n$/);
    assert.equal(simWorld().get("web-77")?.state, "running");
    const stopped = await ok("vm", "stop", "web-77", "--timeout", "5s");
    assert.match(stopped.stdout, /^stop web-77 on node-02: succeeded\n$/);
    assert.equal(simWorld().get("web-77")?.state, "stopped");
    // The same idempotency key names the same operation: a retried call does not stop it twice.
    const first = await ok("vm", "start", "web-77", "--request-id", "retry-1", "--no-wait");
    const again = await ok("vm", "start", "web-77", "--request-id", "retry-1", "--no-wait");
    assert.equal(again.stdout, first.stdout);
    assert.match(first.stdout, /^rq-[0-9a-f]+\n$/);
    await ok("vm", "operation", first.stdout.trim(), "--wait");
    await ok("vm", "reboot", "web-77");
    assert.equal(simWorld().get("web-77")?.state, "running");
    const deleted = await ok("vm", "delete", "web-77", "--force");
    assert.equal(simWorld().has("web-77"), false);
    // Its record is gone with it: the id reads as missing, and is free again.
    await eventually(async () => {
      const r = await hv("vm", "get", "web-77");
      assert.equal(r.code, 5, r.stderr);
    });
    assert.equal((await outcome(deleted.op)).decision, "succeeded");
    assert.equal((await outcome(created.op)).method, "CreateVm");
    // Each call was audited as a call too, by the caller.
    const calls = audit().filter((r) => r.event === "rpc" && r.service === "debvisor.v1.VmService");
    for (const m of ["CreateVm", "StartVm", "StopVm", "RebootVm", "DeleteVm"])
      assert.ok(
        calls.some((r) => r.method === m && r.principal === "admin"),
        `${m} audited`,
      );
  });

  it("runs the same lifecycle on a node served by an agent process", async () => {
    const created = await ok(
      ...["vm", "create", "agent-vm", "--cpu", "1", "--memory", "512MiB", "--node", "node-04"],
      ...["--new-disk", "zfs:tank/agent-vm-disk0=1GiB", "--start"],
    );
    assert.match(created.stdout, /^create agent-vm on node-04: succeeded\n$/);
    assert.equal((await agentDomains()).get("agent-vm"), "running");
    await ok("vm", "stop", "agent-vm", "--force");
    assert.equal((await agentDomains()).get("agent-vm"), "stopped");
    await ok("vm", "start", "agent-vm");
    await ok("vm", "reboot", "agent-vm");
    assert.equal((await agentDomains()).get("agent-vm"), "running");
    const deleted = await ok("vm", "delete", "agent-vm", "--force");
    assert.equal((await agentDomains()).has("agent-vm"), false);
    assert.deepEqual(
      actions()
        .map((l) => l.split(" ").slice(1).join(" "))
        .filter((l) => l.endsWith(" agent-vm")),
      [
        "define agent-vm",
        "start agent-vm",
        "force-stop agent-vm",
        "start agent-vm",
        "stop agent-vm",
        "start agent-vm",
        "force-undefine agent-vm",
      ],
    );
    assert.equal((await outcome(deleted.op)).decision, "succeeded");
  });

  it("answers a coded error for a VM nobody holds, and a failed operation for one its node does not hold", async () => {
    const missing = await hv("vm", "stop", "ghost-vm");
    assert.equal(missing.code, 5);
    assert.match(missing.stderr, /^hvctl: vm not found.*\(NOT_FOUND, request [0-9a-f-]+\)\n$/);
    // The store places lost-vm on node-04, but the node no longer holds it (gone behind
    // the control plane's back): the node's answer is the operation's coded outcome.
    await ok("vm", "create", "lost-vm", "--cpu", "1", "--memory", "256MiB", "--node", "node-04");
    agent.proc.kill("SIGKILL");
    await new Promise((r) => agent.proc.once("exit", r));
    const file = join(dir, "node-04", "sim-world.json");
    const world = JSON.parse(readFileSync(file, "utf8")) as { vms: { info: { id: string } }[] };
    world.vms = world.vms.filter((v) => v.info.id !== "lost-vm");
    writeFileSync(file, JSON.stringify(world));
    agent = startAgent([
      ...["--dir", join(dir, "node-04"), "--server", daemon.grpcAddress, "--driver", "sim"],
    ]);
    await agent.waitLog("connected to the control plane");
    const r = await hv("vm", "stop", "lost-vm", "--force");
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout, /^stop lost-vm on node-04: failed: VM_NOT_FOUND \(vm not found\)\n$/);
    const rec = await outcome(opId(r.stderr));
    assert.equal(rec.decision, "failed");
    assert.equal(rec.code, "NOT_FOUND");
  });

  it("lets a tenant act on its own VMs only: another tenant's VM reads like a missing one", async () => {
    const vms = (await root().vms.listVms({ pageSize: 1000 })).vms;
    const mine = vms.find((v) => v.tenant === "acme" && v.nodeId?.id === "node-01") as VmInfo;
    const theirs = vms.find((v) => v.tenant === "globex") as VmInfo;
    const key = await root().access.createApiKey({
      principal: "acme-ops",
      roles: ["operator"],
      tenant: "acme",
    });
    const viewer = await root().access.createApiKey({
      principal: "acme-viewer",
      roles: ["viewer"],
      tenant: "acme",
    });
    const acme = devClients(bearerContext(admin, key.token), channels).vms;
    const before = simWorld().get(theirs.id);
    const other = await callOutcome(acme.stopVm({ vmId: theirs.id, force: true }));
    const absent = await callOutcome(acme.stopVm({ vmId: "no-such-vm", force: true }));
    assert.deepEqual(other, { code: NOT_FOUND, reason: "VM_NOT_FOUND" });
    assert.deepEqual(other, absent);
    assert.deepEqual(await callOutcome(acme.startVm({ vmId: theirs.id })), other);
    assert.deepEqual(simWorld().get(theirs.id), before);
    // Its own VM it may stop and start; a new one lands in its tenant; a viewer may do neither.
    const stop = await acme.stopVm({ vmId: mine.id, force: true });
    await eventually(async () => {
      const op = await acme.getOperation({ operationId: stop.id });
      assert.equal(op.state, VmOperationState.SUCCEEDED);
    });
    await acme.startVm({ vmId: mine.id });
    const created = await acme.createVm({
      vmId: "acme-new",
      spec: { vcpus: 1, memoryBytes: GIB },
    });
    await eventually(async () => {
      assert.equal((await acme.getVm({ vmId: "acme-new" })).tenant, "acme");
    });
    const globex = await root().access.createApiKey({
      principal: "globex-ops",
      roles: ["operator"],
      tenant: "globex",
    });
    const g = devClients(bearerContext(admin, globex.token), channels).vms;
    assert.deepEqual(await callOutcome(g.getOperation({ operationId: created.id })), {
      code: NOT_FOUND,
      reason: "OPERATION_NOT_FOUND",
    });
    const view = devClients(bearerContext(admin, viewer.token), channels).vms;
    assert.equal((await callOutcome(view.startVm({ vmId: mine.id }))).code, PERMISSION_DENIED);
    assert.equal(
      (await callOutcome(view.createVm({ vmId: "v-new", spec: { vcpus: 1, memoryBytes: GIB } })))
        .code,
      PERMISSION_DENIED,
    );
  });

  it("shows a VM the store does not know as unmanaged until it is adopted into a tenant", async () => {
    const list = async () =>
      (
        JSON.parse((await ok("vm", "list", "--node", "node-04", "-o", "json")).stdout) as {
          vms: { id: string; managed?: boolean; tenant?: string }[];
        }
      ).vms;
    const reported = (await list()).filter((v) => v.id.startsWith("node-04-vm-"));
    assert.ok(reported.length >= 1);
    for (const v of reported) assert.notEqual(v.managed, true, `${v.id} shows as unmanaged`);
    const id = reported[0]?.id ?? "";
    const table = await ok("vm", "list", "--node", "node-04");
    assert.match(table.stdout, new RegExp(`^${id} .*(Running|Stopped) \\(unmanaged\\)`, "m"));
    const adopted = await ok("vm", "adopt", id, "initech");
    assert.equal(adopted.stdout, `vm ${id} is managed in tenant initech\n`);
    const after = (await list()).find((v) => v.id === id);
    assert.equal(after?.managed, true);
    assert.equal(after?.tenant, "initech");
    const shown = (await ok("vm", "list", "--node", "node-04")).stdout;
    assert.doesNotMatch(shown, new RegExp(`^${id} .*unmanaged`, "m"));
    const again = await hv("vm", "adopt", id, "acme");
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already managed \(FAILED_PRECONDITION/);
    assert.equal((await list()).find((v) => v.id === id)?.tenant, "initech");
  });

  it("does not adopt a VM while an operation on it is open: a stop waiting on its node is not undone", async () => {
    const unmanaged = (
      JSON.parse((await ok("vm", "list", "--node", "node-04", "-o", "json")).stdout) as {
        vms: { id: string; managed?: boolean }[];
      }
    ).vms.find((v) => v.id.startsWith("node-04-vm-") && v.managed !== true);
    const id = unmanaged?.id ?? "";
    assert.notEqual(id, "", "an unmanaged VM on node-04");
    if ((await agentDomains()).get(id) !== "running") await ok("vm", "start", id);
    // The agent paused: the stop is accepted and waits there.
    agent.proc.kill("SIGSTOP");
    let stop: Awaited<ReturnType<typeof ok>>;
    try {
      stop = await ok("vm", "stop", id, "--force", "--no-wait");
      const refused = await hv("vm", "adopt", id, "initech");
      assert.equal(refused.code, 1, refused.stderr);
      assert.match(refused.stderr, /has not ended: adopt it once it has .*FAILED_PRECONDITION/);
    } finally {
      agent.proc.kill("SIGCONT");
    }
    const opId = stop.stdout.trim();
    await ok("vm", "operation", opId, "--wait");
    assert.equal((await agentDomains()).get(id), "stopped");
    await ok("vm", "adopt", id, "initech");
    const got = JSON.parse((await ok("vm", "get", id, "-o", "json")).stdout) as {
      desiredState?: string;
    };
    assert.equal(got.desiredState, "VM_STATE_STOPPED", "adopted as it is: stopped");
  });

  it("refuses invalid specs with INVALID_ARGUMENT and changes nothing", async () => {
    const vms = root().vms;
    const disk = (name: string) => ({
      dataset: { backend: StorageBackend.BACKEND_RBD, pool: "rbd", name },
      sizeBytes: GIB,
    });
    const cases = {
      "0 vCPUs": { vmId: "bad-1", spec: { vcpus: 0, memoryBytes: GIB } },
      "absurd memory": { vmId: "bad-2", spec: { vcpus: 1, memoryBytes: 1024n ** 5n } },
      "too many disks": {
        vmId: "bad-3",
        spec: {
          vcpus: 1,
          memoryBytes: GIB,
          disks: Array.from({ length: 9 }, (_, i) => disk(`d${i}`)),
        },
      },
      "a bad vm name": { vmId: "Bad Name!", spec: { vcpus: 1, memoryBytes: GIB } },
      // A libvirt node's define failed on these (BACKEND_FAILED), after the create was accepted.
      "a display name with a line break": {
        vmId: "bad-7",
        spec: { name: "web\nowned", vcpus: 1, memoryBytes: GIB },
      },
      "a display name with a control character": {
        vmId: "bad-8",
        spec: { name: "web\u0000x", vcpus: 1, memoryBytes: GIB },
      },
      "a display name that reorders text": {
        vmId: "bad-9",
        spec: { name: "web\u202etxt.exe", vcpus: 1, memoryBytes: GIB },
      },
      "a bad disk name": {
        vmId: "bad-5",
        spec: { vcpus: 1, memoryBytes: GIB, disks: [disk("../x")] },
      },
      "no spec": { vmId: "bad-6" },
    };
    const vmsBefore = (await vms.listVms({ pageSize: 1000 })).vms.length;
    const worldBefore = JSON.stringify([...simWorld()]);
    const opsBefore = audit().filter((r) => r.event === "vm.operation").length;
    for (const [name, req] of Object.entries(cases))
      assert.deepEqual(
        await callOutcome(vms.createVm(req)),
        { code: INVALID_ARGUMENT, reason: "INVALID_ARGUMENT" },
        name,
      );
    // A spec no node has room for is refused as such, before anything is written.
    assert.deepEqual(
      await callOutcome(
        vms.createVm({ vmId: "huge", spec: { vcpus: 128, memoryBytes: 4n * 1024n ** 4n } }),
      ),
      { code: FAILED_PRECONDITION, reason: "NO_TARGET" },
    );
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal((await vms.listVms({ pageSize: 1000 })).vms.length, vmsBefore);
    assert.equal(JSON.stringify([...simWorld()]), worldBefore);
    assert.equal(audit().filter((r) => r.event === "vm.operation").length, opsBefore);
    // The refusals were audited as refused calls.
    assert.ok(
      audit().some(
        (r) => r.event === "rpc" && r.method === "CreateVm" && r.code === "INVALID_ARGUMENT",
      ),
    );
  });

  it("refuses hvctl's --new-disk of size 0, which the server takes as attaching an existing disk", async () => {
    // A deleted VM's disk stays (DeleteVm undefines the domain only).
    await ok(
      ...["vm", "create", "old-1", "--cpu", "1", "--memory", "1GiB", "--node", "node-01"],
      ...["--new-disk", "rbd:rbd/old-1-d0=1GiB"],
    );
    await ok("vm", "delete", "old-1");
    await eventually(async () => assert.equal((await hv("vm", "get", "old-1")).code, 5));
    // Asked for a new, empty disk: size 0 on the wire means "the dataset exists", and the new
    // VM got the old one's disk, data and all.
    const r = await hv(
      ...["vm", "create", "new-1", "--cpu", "1", "--memory", "1GiB", "--node", "node-01"],
      ...["--new-disk", "rbd:rbd/old-1-d0=0"],
    );
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--new-disk/);
    assert.equal(simWorld().has("new-1"), false);
  });

  it("gives a disk to one VM: a create naming another VM's disk is refused DISK_IN_USE and writes nothing", async () => {
    await ok(
      ...["vm", "create", "disk-a", "--cpu", "1", "--memory", "1GiB", "--node", "node-01"],
      ...["--new-disk", "rbd:rbd/disk-a-d0=1GiB", "--start"],
    );
    assert.deepEqual(simWorld().get("disk-a"), { node: "node-01", state: "running" });
    const vms = root().vms;
    // Reported by its node, running or not: its disk is its own.
    await eventually(async () => {
      const got = await vms.getVm({ vmId: "disk-a" });
      assert.equal(got.disks.length, 1);
    });
    // Its own create retried hears that the VM exists, not that its new disk does.
    assert.deepEqual(
      await callOutcome(
        vms.createVm({
          vmId: "disk-a",
          nodeId: { id: "node-01" },
          start: true,
          spec: {
            vcpus: 1,
            memoryBytes: GIB,
            disks: [
              {
                dataset: { backend: StorageBackend.BACKEND_RBD, pool: "rbd", name: "disk-a-d0" },
                sizeBytes: GIB,
              },
            ],
          },
        }),
      ),
      { code: 6, reason: "VM_EXISTS" },
    );
    const worldBefore = JSON.stringify([...simWorld()]);
    const opsBefore = audit().filter((r) => r.event === "vm.operation").length;
    const second = await hv(
      ...["vm", "create", "disk-b", "--cpu", "1", "--memory", "1GiB", "--node", "node-02"],
      ...["--disk", "rbd:rbd/disk-a-d0", "--start"],
    );
    assert.equal(second.code, 1, second.stderr);
    assert.match(second.stderr, /rbd\/disk-a-d0 is already the disk of vm disk-a/);
    assert.match(second.stderr, /FAILED_PRECONDITION/);
    assert.deepEqual(
      await callOutcome(
        vms.createVm({
          vmId: "disk-c",
          nodeId: { id: "node-03" },
          start: true,
          spec: {
            vcpus: 1,
            memoryBytes: GIB,
            disks: [
              { dataset: { backend: StorageBackend.BACKEND_RBD, pool: "rbd", name: "disk-a-d0" } },
            ],
          },
        }),
      ),
      { code: FAILED_PRECONDITION, reason: "DISK_IN_USE" },
    );
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(JSON.stringify([...simWorld()]), worldBefore, "nothing defined, nothing started");
    assert.equal(audit().filter((r) => r.event === "vm.operation").length, opsBefore);
    assert.equal((await callOutcome(vms.getVm({ vmId: "disk-b" }))).reason, "VM_NOT_FOUND");
    // Once its VM is deleted, the disk may be another VM's.
    await ok("vm", "delete", "disk-a", "--force");
    await eventually(async () => assert.equal((await hv("vm", "get", "disk-a")).code, NOT_FOUND));
    await ok(
      ...["vm", "create", "disk-b", "--cpu", "1", "--memory", "1GiB", "--node", "node-02"],
      ...["--disk", "rbd:rbd/disk-a-d0"],
    );
    assert.deepEqual(simWorld().get("disk-b"), { node: "node-02", state: "stopped" });
  });

  it("of many concurrent creates on a node with room for 3, accepts exactly 3; the rest are refused and write nothing", async (t) => {
    // A node of its own, whose free memory is all its capacity does not use.
    const hvctl = (...args: string[]) => hvctlInProcess(join(dir, "hvctl.yaml"), ...args);
    const other = startAgent([
      ...["--dir", await enrollAgent(hvctl, daemon.grpcAddress, dir, "node-05")],
      ...["--server", daemon.grpcAddress, "--driver", "sim", "--sim-vms", "1"],
    ]);
    t.after(() => other.proc.kill("SIGKILL"));
    await other.waitLog("connected to the control plane");
    const { vms, nodes } = root();
    const node = await eventually(async () => {
      const got = (await nodes.getNode({ id: { id: "node-05" } })).summary;
      assert.ok((got?.memoryAllocatedBytes ?? 0n) > 0n, "node-05 reports its VM");
      return got;
    });
    const room = (node?.info?.capacity?.memoryBytes ?? 0n) - (node?.memoryAllocatedBytes ?? 0n);
    const k = 3n;
    const each = room / k;
    assert.ok(each >= 64n * 1024n * 1024n, `node-05 has ${room} bytes free`);
    const ids = Array.from({ length: 8 }, (_, i) => `race-${i}`);
    const outcomes = await Promise.all(
      ids.map((vmId) =>
        callOutcome(
          vms.createVm({
            vmId,
            nodeId: { id: "node-05" },
            spec: { vcpus: 1, memoryBytes: each },
          }),
        ),
      ),
    );
    const accepted = ids.filter((_, i) => outcomes[i]?.code === 0);
    assert.equal(accepted.length, Number(k), JSON.stringify(outcomes));
    for (const [i, o] of outcomes.entries())
      if (o.code !== 0)
        assert.deepEqual(o, { code: FAILED_PRECONDITION, reason: "NO_TARGET" }, ids[i]);
    // The accepted ones are defined on the node; the refused ones exist nowhere.
    await eventually(
      async () => {
        const held = await agentDomains("node-05");
        assert.deepEqual(
          ids.filter((id) => held.has(id)),
          accepted,
        );
      },
      { timeoutMs: 15_000 },
    );
    for (const id of ids.filter((id) => !accepted.includes(id)))
      assert.equal((await hv("vm", "get", id)).code, NOT_FOUND, id);
    // Once they are reported, their capacity is counted from the node: still no room for a fourth.
    assert.deepEqual(
      await callOutcome(
        vms.createVm({
          vmId: "race-late",
          nodeId: { id: "node-05" },
          spec: { vcpus: 1, memoryBytes: each },
        }),
      ),
      { code: FAILED_PRECONDITION, reason: "NO_TARGET" },
    );
    for (const id of accepted) await ok("vm", "delete", id, "--force");
  });
});
