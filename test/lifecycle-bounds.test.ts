// A tenant's lifecycle calls hold bounded resources. Found by an
// adversarial review of the VM lifecycle:
// - WatchOperation and WatchMigration are watches like any Watch*: one
//   tenant viewer key held 100 of each open (the connection's stream limit,
//   not the daemon's, stopped it), none refused, while every other watch
//   stops at 64 per principal.
// - Operations on a VM whose node is away wait for it, and are never
//   removed while they wait: one tenant operator queued 500 alternating
//   starts and stops in 5 s, all accepted, to be run one by one once the
//   node is back.
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { type ResolvedContext, resolveContext } from "../src/client/index.js";
import { MigrationState } from "../src/gen/debvisor/v1/migration_pb.js";
import { NodeReadiness } from "../src/gen/debvisor/v1/node_pb.js";
import { VmOperationState } from "../src/gen/debvisor/v1/vm_pb.js";
import { type AgentProcess, enrollAgent, startAgent } from "./helpers/agent-process.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { bearerContext, callOutcome, devClients } from "./helpers/dev-clients.js";
import { eventually } from "./helpers/eventually.js";
import { hvctlInProcess } from "./helpers/hvctl-in-process.js";

const GIB = 1024n ** 3n;
/** Open watches one principal may hold (src/cluster/watch-quota.ts). */
const PER_PRINCIPAL = 64;
/** Operations of one VM that may wait for its node at once (src/cluster/vm-operation-submitter.ts). */
const WAITING_PER_VM = 16;

describe("a tenant's lifecycle calls are bounded", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  let agent: AgentProcess;
  const channels: grpc.Client[] = [];
  const streams: AbortController[] = [];
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-lifewatch-"));
    daemon = await startDevDaemon(dir, {
      // A move that lasts: its migration stays RUNNING for the whole test.
      simulation: { migrationMs: 3_600_000 },
      cluster: { heartbeatIntervalMs: 1000 },
      // Opening many streams quickly is what is tested, not the call rate.
      rateLimit: { perPrincipal: { ratePerSecond: 1000, burst: 1000 } },
    });
    admin = resolveContext(join(dir, "hvctl.yaml"), "dev");
    const hvctl = (...args: string[]) => hvctlInProcess(join(dir, "hvctl.yaml"), ...args);
    const agentDir = await enrollAgent(hvctl, daemon.grpcAddress, dir, "node-04");
    agent = startAgent(["--dir", agentDir, "--server", daemon.grpcAddress, "--driver", "sim"]);
    await agent.waitLog("connected to the control plane");
  });
  after(() => {
    for (const s of streams) s.abort();
    for (const ch of channels) ch.close();
    agent?.proc.kill("SIGKILL");
    daemon?.kill();
  });

  /** Opens `open()` until one is refused or `max` are open; the count open and the refusal's reason. */
  const openUntilRefused = async (
    open: (signal: AbortSignal) => AsyncIterable<unknown>,
    max: number,
  ) => {
    let opened = 0;
    for (let i = 0; i < max; i++) {
      const stop = new AbortController();
      streams.push(stop);
      const first = await callOutcome(open(stop.signal)[Symbol.asyncIterator]().next());
      if (first.code !== 0) return { opened, reason: first.reason };
      opened++;
    }
    return { opened, reason: "" };
  };

  it("refuses a tenant caller's WatchOperation past its open watches", async () => {
    const root = devClients(admin, channels);
    const created = await root.vms.createVm({
      vmId: "acme-away-1",
      tenant: "acme",
      nodeId: { id: "node-04" },
      spec: { vcpus: 1, memoryBytes: GIB },
    });
    await eventually(async () => {
      const op = await root.vms.getOperation({ operationId: created.id });
      assert.equal(op.state, VmOperationState.SUCCEEDED);
    });
    // Its node goes away: a stop asked now waits for it, open.
    agent.proc.kill("SIGKILL");
    const { token } = await root.access.createApiKey({
      principal: "acme-viewer",
      roles: ["viewer", "operator"],
      tenant: "acme",
    });
    // One channel per watch kind: HTTP/2 allows 100 streams on one connection.
    const acme = devClients(bearerContext(admin, token), channels);
    const stop = await acme.vms.stopVm({ vmId: "acme-away-1", force: true });
    assert.equal(stop.state, VmOperationState.PENDING);
    const r = await openUntilRefused(
      (signal) => acme.vms.watchOperation({ operationId: stop.id }, { signal }),
      PER_PRINCIPAL + 1,
    );
    assert.deepEqual(r, { opened: PER_PRINCIPAL, reason: "TOO_MANY_WATCHES" });
  });

  it("bounds the operations of one VM waiting for its node; a retry is still answered", async () => {
    // After the test above: acme-away-1's node is away, one stop waits for it.
    const root = devClients(admin, channels);
    const { token } = await root.access.createApiKey({
      principal: "acme-flood",
      roles: ["operator"],
      tenant: "acme",
    });
    const acme = devClients(bearerContext(admin, token), channels);
    const vmId = "acme-away-1";
    await eventually(
      async () =>
        assert.equal(
          (await root.nodes.getNode({ id: { id: "node-04" } })).summary?.readiness,
          NodeReadiness.NOT_READY,
        ),
      { timeoutMs: 30_000, intervalMs: 250 },
    );
    const outcomes: string[] = [];
    for (let i = 0; i < 40; i++) {
      const r = await callOutcome(
        i % 2 === 0
          ? acme.vms.startVm({ vmId, requestId: `flood-${i}` })
          : acme.vms.stopVm({ vmId, force: true, requestId: `flood-${i}` }),
      );
      outcomes.push(r.reason || "OK");
      if (r.code !== 0) break;
    }
    assert.deepEqual(outcomes, [...Array(WAITING_PER_VM - 1).fill("OK"), "VM_OPERATION_OPEN"]);
    // A retry of one accepted is no new operation: it is answered, not refused.
    const again = await acme.vms.startVm({ vmId, requestId: "flood-0" });
    assert.equal(again.state, VmOperationState.PENDING);
  });

  it("refuses a tenant caller's WatchMigration past its open watches", async () => {
    const root = devClients(admin, channels);
    const { token } = await root.access.createApiKey({
      principal: "acme-mover",
      roles: ["viewer", "operator"],
      tenant: "acme",
    });
    const acme = devClients(bearerContext(admin, token), channels);
    const acmeVm = (await acme.vms.listVms({})).vms.find((v) => v.id.startsWith("vm-"));
    assert.ok(acmeVm !== undefined);
    const m = await acme.migrations.startMigration({
      vm: { vmId: acmeVm.id },
      allowDowntime: true,
    });
    assert.equal(m.state === MigrationState.RUNNING || m.state === MigrationState.PENDING, true);
    const r = await openUntilRefused(
      (signal) => acme.migrations.watchMigration({ migrationId: m.migrationId }, { signal }),
      PER_PRINCIPAL + 1,
    );
    assert.deepEqual(r, { opened: PER_PRINCIPAL, reason: "TOO_MANY_WATCHES" });
  });

  it("gives a stream's room back when it ends", async () => {
    for (const s of streams.splice(0)) s.abort();
    const root = devClients(admin, channels);
    const { token } = await root.access.createApiKey({
      principal: "acme-mover",
      roles: ["viewer"],
      tenant: "acme",
    });
    const acme = devClients(bearerContext(admin, token), channels);
    const [m] = (await acme.migrations.listMigrations({})).migrations;
    assert.ok(m !== undefined);
    await eventually(async () => {
      const r = await openUntilRefused(
        (signal) => acme.migrations.watchMigration({ migrationId: m.migrationId }, { signal }),
        1,
      );
      for (const s of streams.splice(0)) s.abort();
      assert.deepEqual(r, { opened: 1, reason: "" });
    });
  });
});

describe("operations waiting for a node are bounded under concurrent calls", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  let agent: AgentProcess;
  const channels: grpc.Client[] = [];
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-lifeburst-"));
    daemon = await startDevDaemon(dir, {
      cluster: { heartbeatIntervalMs: 1000 },
      rateLimit: { perPrincipal: { ratePerSecond: 1000, burst: 1000 } },
    });
    admin = resolveContext(join(dir, "hvctl.yaml"), "dev");
    const hvctl = (...args: string[]) => hvctlInProcess(join(dir, "hvctl.yaml"), ...args);
    const agentDir = await enrollAgent(hvctl, daemon.grpcAddress, dir, "node-05");
    // A domain the node had before the control plane knew it: reported, never adopted.
    agent = startAgent([
      "--dir",
      agentDir,
      "--server",
      daemon.grpcAddress,
      "--driver",
      "sim",
      "--sim-vms",
      "1",
    ]);
    await agent.waitLog("connected to the control plane");
  });
  after(() => {
    for (const ch of channels) ch.close();
    agent?.proc.kill("SIGKILL");
    daemon?.kill();
  });

  it("a burst of calls at once on a VM whose node is away queues no more than the bound", async () => {
    const root = devClients(admin, channels);
    let vmId = "";
    await eventually(async () => {
      const vm = (await root.vms.listVms({})).vms.find((v) => v.nodeId?.id === "node-05");
      assert.ok(vm !== undefined);
      vmId = vm.id;
    });
    agent.proc.kill("SIGKILL");
    await eventually(
      async () =>
        assert.equal(
          (await root.nodes.getNode({ id: { id: "node-05" } })).summary?.readiness,
          NodeReadiness.NOT_READY,
        ),
      { timeoutMs: 30_000, intervalMs: 250 },
    );
    const outcomes = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        callOutcome(root.vms.rebootVm({ vmId, requestId: `burst-${i}` })),
      ),
    );
    const accepted = outcomes.filter((o) => o.code === 0).length;
    assert.ok(
      accepted <= WAITING_PER_VM,
      `${accepted} of 60 operations sent at once were queued for the away node (bound ${WAITING_PER_VM})`,
    );
  });
});
