import "reflect-metadata";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { hideIpSniWarning } from "../src/client/index.js";
import { type AgentOperations, createAgentOperations, operationKey } from "../src/cluster/index.js";
import { type RpcError, systemClock } from "../src/core/index.js";
import {
  OperationPhase,
  type OperationRecord,
  OperationRecordSchema,
} from "../src/gen/debvisor/store/v1/agent_records_pb.js";
import {
  AgentMessageSchema,
  type ControlMessage,
  ControlMessageSchema,
  OperationKind,
  OperationOutcome,
} from "../src/gen/debvisor/v1/agent_pb.js";
import { type VmInfoSchema, VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { createEtcdStore, type KvStore } from "../src/store/index.js";
import {
  AGENT_BIN,
  type AgentProcess,
  enrollAgent,
  runEnroll,
  startAgent,
} from "./helpers/agent-process.js";
import {
  type DaemonProcess,
  runProcess,
  startDevDaemon,
  startReplica,
} from "./helpers/daemon-process.js";
import { startEtcd } from "./helpers/etcd-server.js";
import { eventually } from "./helpers/eventually.js";
import { hvctlInProcess } from "./helpers/hvctl-in-process.js";
import { nodeChannel } from "./helpers/node-stream.js";
import { startNotifySocket } from "./helpers/notify-socket.js";

const CONNECT = "/debvisor.v1.AgentService/Connect";
hideIpSniWarning();

/** The shared {@link eventually} on a probe that answers `undefined` until it holds. */
function until<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 15_000,
): Promise<T> {
  return eventually(
    async () => {
      const v = await probe();
      assert.ok(v !== undefined, `timed out waiting for ${what}`);
      return v as T;
    },
    { timeoutMs, intervalMs: 100 },
  );
}

describe("node agents on their stream", async () => {
  const etcd = await startEtcd();
  // Not installed: skipped with a notice (under CI=true startEtcd throws instead).
  if (etcd === undefined) return;
  let dir: string;
  let daemon: DaemonProcess;
  let store: KvStore;
  let ops: AgentOperations;
  const agents: AgentProcess[] = [];
  const prefix = `/agents-${process.pid}/`;

  const hvctl = (...args: string[]) => hvctlInProcess(join(dir, "hvctl.yaml"), ...args);
  const agentCli = (...args: string[]) => runProcess(process.execPath, [AGENT_BIN, ...args]);
  /** Enrolls `node` into dir/<node> with a one-time token from hvctl. */
  const enrollNode = (node: string) => enrollAgent(hvctl, daemon.grpcAddress, dir, node);
  const run = (node: string, ...extra: string[]) => {
    const a = startAgent([
      "--dir",
      join(dir, node),
      "--server",
      daemon.grpcAddress,
      "--driver",
      "sim",
      "--sim-vms",
      "3",
      ...extra,
    ]);
    agents.push(a);
    return a;
  };
  const waitDone = (node: string, id: string, timeoutMs = 15_000) =>
    until(
      `${node}/${id} done`,
      async () => {
        const r = await ops.get(node, id);
        return r?.phase === OperationPhase.DONE ? r : undefined;
      },
      timeoutMs,
    );
  const actions = (node: string) => {
    const f = join(dir, node, "sim-actions.log");
    return existsSync(f) ? readFileSync(f, "utf8").trim().split("\n").filter(Boolean) : [];
  };
  const localDomains = async (node: string, ...driver: string[]) => {
    const args = driver.length > 0 ? driver : ["--driver", "sim"];
    const r = await agentCli("status", "--dir", join(dir, node), "-o", "json", ...args);
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { domains: { id: string; state: string }[] }).domains;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-agent-"));
    daemon = await startDevDaemon(dir, {
      simulation: { enabled: false },
      store: { backend: "etcd", endpoints: [etcd.endpoint], prefix },
      cluster: { heartbeatIntervalMs: 1000 },
      limits: { streamWriteStallMs: 1000 },
      agents: { sendQueueMax: 64 },
      log: { level: "debug" },
    });
    // Another control-plane process's view of the same store: it writes operations, it holds no stream.
    store = createEtcdStore({ endpoints: [etcd.endpoint], prefix });
    ops = createAgentOperations(store, systemClock);
    for (const n of ["node-a", "node-b", "node-c"]) await enrollNode(n);
  });
  after(async () => {
    for (const a of agents) a.proc.kill("SIGKILL");
    daemon?.kill();
    await store?.close();
    await etcd.stop();
  });

  it("an enrolled agent connects, its node is READY and its domains are listed by ListVms", async () => {
    const a = run("node-a");
    await a.waitLog("connected to the control plane");
    const node = await until("node-a in the node list", async () => {
      const r = await hvctl("-o", "json", "node", "get", "node-a");
      return r.code === 0 ? (JSON.parse(r.stdout) as Record<string, unknown>) : undefined;
    });
    assert.match(JSON.stringify(node), /NODE_READINESS_READY|"READY"/);
    const vms = await hvctl("-o", "json", "vm", "list", "--node", "node-a");
    assert.equal(vms.code, 0, vms.stderr);
    const listed = (JSON.parse(vms.stdout) as { vms: { id: string }[] }).vms.map((v) => v.id);
    const local = (await localDomains("node-a")).map((d) => d.id);
    assert.equal(local.length, 3);
    assert.deepEqual(
      listed.sort(),
      local.sort(),
      "ListVms shows what the agent's hypervisor holds",
    );
    // The CLI's two outputs, each its own process: the JSON whole, and the table's line per domain.
    const cli = (output: string) =>
      agentCli("status", "--dir", join(dir, "node-a"), "--driver", "sim", "-o", output);
    const json = await cli("json");
    assert.equal(json.code, 0, json.stderr);
    const status = JSON.parse(json.stdout) as {
      node: string;
      driver: string;
      domains: { id: string; state: string; vcpus: number; memoryBytes: string }[];
      storage?: unknown;
    };
    assert.equal(status.node, "node-a");
    assert.equal(status.driver, "simulation");
    assert.equal(status.storage, undefined, "no storage configured, none shown");
    assert.deepEqual(status.domains.map((d) => d.id).sort(), local.sort());
    for (const d of status.domains) assert.match(d.memoryBytes, /^[1-9][0-9]*$/);
    const table = await cli("table");
    assert.equal(table.code, 0, table.stderr);
    assert.equal(
      table.stdout,
      status.domains.map((d) => `${d.id}\t${d.state}\t${d.vcpus} vcpu\n`).join(""),
    );
  });

  it("refuses a stream whose certificate is not the node its Hello names, and audits it", async () => {
    const ch = nodeChannel(daemon.grpcAddress, join(dir, "node-b"));
    const call = openStream(ch);
    const ended = new Promise<grpc.ServiceError>((resolve) => call.once("error", resolve));
    call.write(helloFor("node-a"));
    const err = await ended;
    assert.equal(err.code, grpc.status.PERMISSION_DENIED);
    ch.close();
    const audit = await until("agent.refused in the audit trail", async () => {
      const text = readFileSync(join(dir, "audit.log"), "utf8");
      return text.includes('"agent.refused"') ? text : undefined;
    });
    assert.match(audit, /"principal":"node-b".*"args":"node=node-a"/);
    const node = await hvctl("-o", "json", "node", "get", "node-a");
    assert.doesNotMatch(node.stdout, /node-b/, "the refused Hello changed nothing");
  });

  it("runs an operation written to the store by another process once, and only once", async () => {
    await submit("node-a", "op-stop-1", OperationKind.STOP_VM, "node-a-vm-001");
    const done = await waitDone("node-a", "op-stop-1");
    assert.equal(done.result?.outcome, OperationOutcome.SUCCEEDED, done.result?.message);
    const state = (await localDomains("node-a")).find((d) => d.id === "node-a-vm-001")?.state;
    assert.equal(state, "stopped");
    // Submitting the same id again is the same operation: nothing runs.
    await submit("node-a", "op-stop-1", OperationKind.STOP_VM, "node-a-vm-001");
    // A fixed span on purpose: the behaviour is that nothing (more) happens in it.
    await sleep(1500);
    assert.deepEqual(
      actions("node-a").map((l) => l.split(" ").slice(1).join(" ")),
      ["stop node-a-vm-001"],
    );
  });

  it("refuses an operation of a kind its agent did not announce: at once when written, and never sends one written anyway", async () => {
    // node-a's agent runs no storage: its Hello names no op:list-snapshots.
    const params = { backend: "zfs", pool: "tank", dataset: "node-a-vm-001-disk0" };
    await assert.rejects(
      submit("node-a", "op-nostore-1", OperationKind.LIST_SNAPSHOTS, "", params),
      (e: RpcError) => e.reason === "AGENT_CAPABILITY_MISSING",
    );
    assert.equal(await ops.get("node-a", "op-nostore-1"), undefined, "nothing was written");
    // One written straight to the store (by a process that did not check) ends at the hub, unsent.
    await store.put(
      operationKey("node-a", "op-nostore-2"),
      toBinary(
        OperationRecordSchema,
        create(OperationRecordSchema, {
          dispatch: { operationId: "op-nostore-2", kind: OperationKind.LIST_SNAPSHOTS, params },
          nodeId: "node-a",
          phase: OperationPhase.PENDING,
        }),
      ),
    );
    const done = await waitDone("node-a", "op-nostore-2");
    assert.equal(done.result?.outcome, OperationOutcome.FAILED);
    assert.equal(done.result?.reason, "AGENT_CAPABILITY_MISSING");
    assert.equal(done.deliveries, 0, "it was never sent to the agent");
  });

  it("answers a redelivered finished operation from its journal instead of running it again", async () => {
    // As if the result had been lost: the record is pending again when the agent reconnects.
    const done = await ops.get("node-a", "op-stop-1");
    assert.ok(done !== undefined);
    const key = operationKey("node-a", "op-stop-1");
    await store.put(
      key,
      toBinary(
        OperationRecordSchema,
        create(OperationRecordSchema, {
          ...done,
          phase: OperationPhase.PENDING,
          result: undefined,
        }),
      ),
    );
    const old = agents.find(
      (a) => a.proc.exitCode === null && a.proc.spawnargs.includes(join(dir, "node-a")),
    );
    old?.proc.kill("SIGTERM");
    if (old !== undefined) await new Promise((r) => old.proc.once("exit", r));
    const again = run("node-a");
    await again.waitLog("connected to the control plane");
    const replayed = await waitDone("node-a", "op-stop-1");
    assert.equal(replayed.result?.outcome, OperationOutcome.SUCCEEDED);
    assert.equal(replayed.result?.replayed, true, "answered from the journal");
    assert.equal(actions("node-a").filter((l) => l.endsWith("stop node-a-vm-001")).length, 1);
  });

  it("runs an operation written while its agent was away once the agent connects", async () => {
    const old = agents.find(
      (a) => a.proc.exitCode === null && a.proc.spawnargs.includes(join(dir, "node-a")),
    );
    old?.proc.kill("SIGTERM");
    if (old !== undefined) await new Promise((r) => old.proc.once("exit", r));
    await submit("node-a", "op-away-1", OperationKind.START_VM, "node-a-vm-001");
    // A fixed span on purpose: the behaviour is that nothing (more) happens in it.
    await sleep(500);
    assert.equal((await ops.get("node-a", "op-away-1"))?.phase, OperationPhase.PENDING);
    const again = run("node-a");
    await again.waitLog("connected to the control plane");
    const done = await waitDone("node-a", "op-away-1");
    assert.equal(done.result?.outcome, OperationOutcome.SUCCEEDED, done.result?.message);
    const state = (await localDomains("node-a")).find((d) => d.id === "node-a-vm-001")?.state;
    assert.equal(state, "running");
  });

  it("an agent killed with kill -9 mid-operation and restarted neither loses nor repeats it", async () => {
    const first = run("node-c", "--sim-action-ms", "2500");
    await first.waitLog("connected to the control plane");
    await submit("node-c", "op-crash-1", OperationKind.STOP_VM, "node-c-vm-002");
    await until("op-crash-1 running", async () => {
      const r = await ops.get("node-c", "op-crash-1");
      return r?.phase === OperationPhase.RUNNING ? r : undefined;
    });
    first.proc.kill("SIGKILL");
    await new Promise((r) => first.proc.once("exit", r));
    const second = run("node-c", "--sim-action-ms", "2500");
    await second.waitLog("connected to the control plane");
    const done = await waitDone("node-c", "op-crash-1", 20_000);
    assert.equal(done.result?.outcome, OperationOutcome.SUCCEEDED, done.result?.message);
    assert.ok(done.deliveries >= 2, "redelivered after the reconnect");
    const state = (await localDomains("node-c")).find((d) => d.id === "node-c-vm-002")?.state;
    assert.equal(state, "stopped");
    // A fixed span on purpose: the behaviour is that nothing (more) happens in it.
    await sleep(1000);
    assert.deepEqual(
      actions("node-c").map((l) => l.split(" ").slice(1).join(" ")),
      ["stop node-c-vm-002"],
      "stopped exactly once",
    );
  });

  it("refuses a second agent, and an enroll, on a running agent's directory; the first keeps running and its agent.pid", async () => {
    await enrollNode("node-g");
    const agentDir = join(dir, "node-g");
    const pidFile = join(agentDir, "agent.pid");
    const first = run("node-g");
    await first.waitLog("connected to the control plane");
    assert.equal(readFileSync(pidFile, "utf8").trim(), String(first.proc.pid));
    // By hand beside the systemd unit: same directory, same node.
    const second = await runProcess(
      process.execPath,
      [AGENT_BIN, "run", "--dir", agentDir, "--server", daemon.grpcAddress, "--driver", "sim"],
      { timeoutMs: 15_000 },
    );
    const refused = new RegExp(`another debvisor-agent \\(pid ${first.proc.pid}\\) runs on `);
    assert.equal(second.code, 2, `the second agent ran: ${second.stderr}`);
    assert.match(second.stderr, refused);
    const enroll = await runEnroll(hvctl, daemon.grpcAddress, agentDir, "node-g");
    assert.equal(enroll.code, 2, `enrolled beside the running agent: ${enroll.stderr}`);
    assert.match(enroll.stderr, refused);
    assert.equal(readFileSync(pidFile, "utf8").trim(), String(first.proc.pid), "agent.pid kept");
    assert.equal(first.proc.exitCode, null, "the first agent still runs");
    await submit("node-g", "op-lock-1", OperationKind.STOP_VM, "node-g-vm-001");
    await waitDone("node-g", "op-lock-1");
    assert.equal(
      first.logs.filter((l) => l.msg === "connected to the control plane").length,
      1,
      "the first agent's stream was never ended",
    );
    // A crashed agent's lock is taken over: kill -9, then the unit starts it again.
    first.proc.kill("SIGKILL");
    await new Promise((r) => first.proc.once("exit", r));
    const third = run("node-g");
    await third.waitLog("connected to the control plane");
    assert.equal(readFileSync(pidFile, "utf8").trim(), String(third.proc.pid));
    // One still holding the directory as the next starts (dev mode's agents stopping as their
    // restarted daemon starts new ones) is waited for: paused, then gone 1 s later.
    third.proc.kill("SIGSTOP");
    const fourth = run("node-g");
    await sleep(1000);
    third.proc.kill("SIGKILL");
    await fourth.waitLog("connected to the control plane");
    assert.equal(readFileSync(pidFile, "utf8").trim(), String(fourth.proc.pid));
  });

  it("disconnects an agent that does not read, without delaying another agent's operation", async () => {
    const ch = nodeChannel(daemon.grpcAddress, join(dir, "node-b"));
    const call = openStream(ch);
    const welcomed = new Promise((resolve) => call.once("data", resolve));
    call.write(helloFor("node-b"));
    await welcomed;
    call.pause();
    const failed = new Promise<grpc.ServiceError>((resolve) => call.once("error", resolve));
    // Big operations fill the transport of the stream that reads nothing.
    const bulk: Record<string, string> = {};
    for (let i = 0; i < 30; i++) bulk[`p${i}`] = "x".repeat(1000);
    for (let i = 0; i < 40; i++)
      await submit("node-b", `op-bulk-${i}`, OperationKind.START_VM, "node-b-vm-001", bulk);
    const t0 = Date.now();
    await submit("node-a", "op-start-1", OperationKind.START_VM, "node-a-vm-001");
    // Not held up until node-b's stream goes: seconds at most, with room for a loaded machine
    // (two agent processes, the daemon and etcd on two cores). node-b's stall limit is 1 s,
    // so it is a hub blocked on that stream with no end that this tells apart.
    const done = await waitDone("node-a", "op-start-1", 10_000);
    assert.equal(done.result?.outcome, OperationOutcome.SUCCEEDED);
    assert.ok(Date.now() - t0 < 6000, `the other agent's operation took ${Date.now() - t0} ms`);
    await until(
      "node-b's stream closed by the server",
      async () =>
        daemon.logs.find((l) => l.msg === "agent disconnected" && l.node === "node-b") ?? undefined,
      10_000,
    );
    call.resume();
    const err = await Promise.race([failed, sleep(5000).then(() => undefined)]);
    assert.equal(err?.code, grpc.status.RESOURCE_EXHAUSTED, "the stream was reset");
    const pending = await ops.get("node-b", "op-bulk-0");
    assert.notEqual(pending?.phase, OperationPhase.DONE, "its operations wait for a reconnect");
    ch.close();
  });

  it("tells systemd it is ready, pings its watchdog, and stops cleanly on SIGTERM", async () => {
    const notify = await startNotifySocket();
    try {
      await enrollNode("node-d");
      const a = startAgent(
        ["--dir", join(dir, "node-d"), "--server", daemon.grpcAddress, "--driver", "sim"],
        { NOTIFY_SOCKET: notify.path, WATCHDOG_USEC: "1000000" },
      );
      agents.push(a);
      assert.match(await notify.waitFor("READY=1"), /STATUS=node node-d/);
      await a.waitLog("connected to the control plane");
      await notify.waitFor("WATCHDOG=1", 5000);
      const exited = new Promise<number | null>((r) => a.proc.once("exit", (code) => r(code)));
      a.proc.kill("SIGTERM");
      assert.equal(await exited, 0);
      await notify.waitFor("STOPPING=1");
    } finally {
      notify.close();
    }
  });

  it("runs the libvirt driver inside an agent against virsh -c test:///default", async (t) => {
    const virsh = await runProcess("virsh", ["-c", "test:///default", "list", "--all", "--name"]);
    if (virsh.code !== 0) {
      if (process.env.CI === "true") throw new Error("virsh is required under CI=true");
      t.skip("virsh is not installed");
      return;
    }
    const libvirtDir = await enrollNode("node-lv");
    const a = startAgent([
      "--dir",
      libvirtDir,
      "--server",
      daemon.grpcAddress,
      "--driver",
      "libvirt",
      "--uri",
      "test:///default",
    ]);
    agents.push(a);
    await a.waitLog("connected to the control plane");
    const expected = virsh.stdout.split("\n").filter(Boolean).sort();
    assert.ok(expected.length > 0);
    const local = await localDomains("node-lv", "--driver", "libvirt", "--uri", "test:///default");
    assert.deepEqual(local.map((d) => d.id).sort(), expected);
    const vms = await until("node-lv's domains in ListVms", async () => {
      const r = await hvctl("-o", "json", "vm", "list", "--node", "node-lv");
      const ids = (JSON.parse(r.stdout) as { vms: { id: string }[] }).vms.map((v) => v.id);
      return ids.length > 0 ? ids : undefined;
    });
    assert.deepEqual(vms.sort(), expected);
  });

  it("moves to another control-plane process mid-operation without losing or repeating it", async () => {
    // A second daemon on the same etcd with the same cluster CA, in a data directory of its
    // own (one daemon per data directory); it goes first in the agent's list.
    const second = await startReplica(dir, "second", {
      simulation: { enabled: false },
      store: { backend: "etcd", endpoints: [etcd.endpoint], prefix },
      cluster: { heartbeatIntervalMs: 1000 },
    });
    try {
      await enrollNode("node-e");
      const a = startAgent([
        "--dir",
        join(dir, "node-e"),
        "--server",
        second.grpcAddress,
        daemon.grpcAddress,
        "--driver",
        "sim",
        "--sim-action-ms",
        "2500",
      ]);
      agents.push(a);
      const first = await a.waitLog("connected to the control plane");
      assert.equal(first.server, second.grpcAddress);
      await submit("node-e", "op-move-1", OperationKind.STOP_VM, "node-e-vm-003");
      await until("op-move-1 running", async () => {
        const r = await ops.get("node-e", "op-move-1");
        return r?.phase === OperationPhase.RUNNING ? r : undefined;
      });
      const t0 = Date.now();
      second.proc.kill("SIGTERM");
      assert.equal(await second.exited, 0);
      assert.ok(Date.now() - t0 < 5000, "the agent's open stream did not hold up the shutdown");
      await until("the agent on the other daemon", async () =>
        a.logs.find(
          (l) => l.msg === "connected to the control plane" && l.server === daemon.grpcAddress,
        ),
      );
      const done = await waitDone("node-e", "op-move-1", 20_000);
      assert.equal(done.result?.outcome, OperationOutcome.SUCCEEDED, done.result?.message);
      // A fixed span on purpose: the behaviour is that nothing (more) happens in it.
      await sleep(1000);
      assert.deepEqual(
        actions("node-e").map((l) => l.split(" ").slice(1).join(" ")),
        ["stop node-e-vm-003"],
        "stopped exactly once",
      );
    } finally {
      second.kill();
    }
  });

  it("tells an agent its self-fence window and confirms each lease renewal, a report from the future's too", async () => {
    await enrollNode("node-f");
    const ch = nodeChannel(daemon.grpcAddress, join(dir, "node-f"));
    const call = openStream(ch);
    const got: ControlMessage[] = [];
    call.on("data", (m: ControlMessage) => got.push(m));
    call.on("error", () => {});
    call.write(helloFor("node-f"));
    const welcome = await until("the welcome", async () => {
      const m = got.find((x) => x.kind.case === "welcome")?.kind;
      return m?.case === "welcome" ? m.value : undefined;
    });
    // Two thirds of the default fence delay (60 s): the fence delay exceeds it by a margin.
    assert.equal(welcome.selfFenceWindowMs, 40_000);
    const beat = (sequence: bigint, aheadMs: number) =>
      heartbeatFor("node-f", sequence, { aheadMs });
    call.write(beat(1n, 0));
    // A minute ahead: its report is refused, but the node was heard from.
    call.write(beat(2n, 60_000));
    call.write(beat(3n, 0));
    const renewed = await until("three confirmed renewals", async () => {
      const r = got.flatMap((m) => (m.kind.case === "leaseRenewed" ? [m.kind.value] : []));
      return r.length >= 3 ? r : undefined;
    });
    assert.deepEqual(
      renewed.map((r) => r.sequence),
      [1n, 2n, 3n],
    );
    assert.equal(renewed[0]?.ttlMs, 3000, "heartbeat interval 1 s x 3 missed");
    const node = await hvctl("-o", "json", "node", "get", "node-f");
    assert.equal(node.code, 0, node.stderr);
    assert.equal(
      (JSON.parse(node.stdout) as { summary: { readiness: string } }).summary.readiness,
      "NODE_READINESS_READY",
    );
    call.end();
    ch.close();
  });

  it("takes a heartbeat with vms_unchanged as the stream's last list of VMs, and refuses one that lists VMs too", async () => {
    await enrollNode("node-u");
    const ch = nodeChannel(daemon.grpcAddress, join(dir, "node-u"));
    const call = openStream(ch);
    const got: ControlMessage[] = [];
    let failed: grpc.ServiceError | undefined;
    call.on("data", (m: ControlMessage) => got.push(m));
    call.on("error", (err: grpc.ServiceError) => {
      failed = err;
    });
    const vm = (id: string, state: VmState) => ({
      id,
      name: id,
      state,
      vcpus: 1,
      memoryBytes: 1n << 30n,
    });
    call.write(helloFor("node-u", [vm("u-1", VmState.RUNNING), vm("u-2", VmState.RUNNING)]));
    const welcome = await until("the welcome", async () => {
      const m = got.find((x) => x.kind.case === "welcome")?.kind;
      return m?.case === "welcome" ? m.value : undefined;
    });
    assert.equal(welcome.acceptsUnchangedVms, true);
    let sequence = 0n;
    const beat = (vms: ReturnType<typeof vm>[], vmsUnchanged: boolean) => {
      sequence++;
      call.write(heartbeatFor("node-u", sequence, { vms, vmsUnchanged }));
      return sequence;
    };
    const confirmed = (n: bigint) =>
      until(`renewal ${n}`, async () =>
        got.some((m) => m.kind.case === "leaseRenewed" && m.kind.value.sequence === n)
          ? true
          : undefined,
      );
    /** The node's VMs as hvctl shows them: "id state", sorted. */
    const shown = async () => {
      const r = await hvctl("-o", "json", "node", "get", "node-u");
      assert.equal(r.code, 0, r.stderr);
      const d = JSON.parse(r.stdout) as { vms?: { id: string; state: string }[] };
      return (d.vms ?? []).map((v) => `${v.id} ${v.state}`).sort();
    };
    await confirmed(beat([], true));
    assert.deepEqual(await shown(), ["u-1 VM_STATE_RUNNING", "u-2 VM_STATE_RUNNING"]);
    // u-2 stopped and u-1 gone: listed in full, and the next unchanged heartbeats keep that list.
    await confirmed(beat([vm("u-2", VmState.STOPPED)], false));
    await confirmed(beat([], true));
    await confirmed(beat([], true));
    assert.deepEqual(await shown(), ["u-2 VM_STATE_STOPPED"]);
    // vms_unchanged with VMs listed is not a report: refused, and it changes nothing.
    const failedBefore = await heartbeatsCounted("failed");
    beat([vm("u-3", VmState.RUNNING)], true);
    await until("the stream closed", async () => failed);
    assert.equal(failed?.code, grpc.status.INVALID_ARGUMENT);
    assert.match(failed?.details ?? "", /vms_unchanged/);
    assert.deepEqual(await shown(), ["u-2 VM_STATE_STOPPED"]);
    assert.equal(await heartbeatsCounted("failed"), failedBefore + 1, "counted as failed");
    // A heartbeat without its required health is refused before it is read: counted all the same.
    const again = openStream(ch);
    let refused: grpc.ServiceError | undefined;
    again.on("data", () => {});
    again.on("error", (err: grpc.ServiceError) => {
      refused = err;
    });
    again.write(helloFor("node-u"));
    again.write(heartbeatFor("node-u", 1n, { noHealth: true }));
    await until("the second stream closed", async () => refused);
    assert.equal(refused?.code, grpc.status.INVALID_ARGUMENT);
    assert.match(refused?.details ?? "", /health/);
    assert.equal(await heartbeatsCounted("failed"), failedBefore + 2, "counted as failed");
    ch.close();
  });

  /** debvisor_agent_heartbeats_total{outcome} on the daemon's /metrics. */
  async function heartbeatsCounted(outcome: string): Promise<number> {
    const text = await (await fetch(`http://${daemon.httpAddress}/metrics`)).text();
    const m = new RegExp(
      `^debvisor_agent_heartbeats_total\\{outcome="${outcome}"\\} (\\d+)$`,
      "m",
    ).exec(text);
    assert.ok(m, `debvisor_agent_heartbeats_total{outcome="${outcome}"} exported`);
    return Number(m[1]);
  }

  async function submit(
    node: string,
    id: string,
    kind: OperationKind,
    vmId: string,
    params: Record<string, string> = {},
  ): Promise<OperationRecord> {
    return ops.submit(
      node,
      { operationId: id, kind, vmId, params, generation: 0n },
      "test:other-replica",
    );
  }
});

describe("deploy/systemd/debvisor-agent.service", () => {
  const unit = fileURLToPath(
    new URL("../../deploy/systemd/debvisor-agent.service", import.meta.url),
  );
  it("passes systemd-analyze verify and is a notify service with a watchdog", async () => {
    const { code, stdout, stderr } = await runProcess("systemd-analyze", ["verify", unit]);
    assert.equal(code, 0);
    assert.equal(`${stdout}${stderr}`.trim(), "");
    const text = readFileSync(unit, "utf8");
    for (const d of ["Type=notify", "NotifyAccess=all", "WatchdogSec=30", "Restart=always"])
      assert.ok(text.split("\n").includes(d), d);
  });
});

function openStream(ch: grpc.Client): grpc.ClientDuplexStream<Uint8Array, ControlMessage> {
  return ch.makeBidiStreamRequest(
    CONNECT,
    (m: Uint8Array) => Buffer.from(m),
    (b: Buffer) => fromBinary(ControlMessageSchema, b),
    new grpc.Metadata(),
    {},
  );
}

function helloFor(node: string, vms: MessageInitShape<typeof VmInfoSchema>[] = []): Uint8Array {
  return toBinary(
    AgentMessageSchema,
    create(AgentMessageSchema, {
      kind: {
        case: "hello",
        value: {
          info: { id: { id: node }, hostname: `${node}.example` },
          agentVersion: "test",
          // What a simulated node's agent runs: the hub sends nothing else.
          capabilities: ["driver:sim", "op:start-vm", "op:stop-vm"],
          health: {
            nodeId: { id: node },
            timestamp: { seconds: BigInt(Math.floor(Date.now() / 1000)) },
            vms,
          },
        },
      },
    }),
  );
}

function heartbeatFor(
  node: string,
  sequence: bigint,
  o: {
    aheadMs?: number;
    vms?: MessageInitShape<typeof VmInfoSchema>[];
    vmsUnchanged?: boolean;
    noHealth?: boolean;
  },
): Uint8Array {
  return toBinary(
    AgentMessageSchema,
    create(AgentMessageSchema, {
      kind: {
        case: "heartbeat",
        value: {
          sequence,
          vmsUnchanged: o.vmsUnchanged ?? false,
          health: o.noHealth
            ? undefined
            : {
                nodeId: { id: node },
                timestamp: {
                  seconds: BigInt(Math.floor((Date.now() + (o.aheadMs ?? 0)) / 1000)),
                },
                vms: o.vms ?? [],
              },
        },
      },
    }),
  );
}
