import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { hideIpSniWarning } from "../src/client/index.js";
import { TransferChunkSchema } from "../src/gen/debvisor/v1/agent_pb.js";
import { AGENT_BIN, enrollAgent } from "./helpers/agent-process.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { hvctlInProcess } from "./helpers/hvctl-in-process.js";
import { nodeChannel } from "./helpers/node-stream.js";
import { downloadTransfer, fakeTarget, storageSnapshots } from "./helpers/transfer-calls.js";

const DATASET = "zfs:tank/node-a-vm-002-disk0";
const MIB = 1024 * 1024;
hideIpSniWarning();

describe("replication between two agents, relayed by the control plane", () => {
  let dir: string;
  let daemon: DaemonProcess;
  const agents = new Map<string, ChildProcess>();

  const hvctl = (...args: string[]) => hvctlInProcess(join(dir, "hvctl.yaml"), ...args);
  const nodeDir = (node: string) => join(dir, node);
  const channelOf = (node: string) => nodeChannel(daemon.grpcAddress, nodeDir(node));
  const storageFlags = ["--driver", "sim", "--storage", "sim"];

  /** Starts `debvisor-agent run` for a node; resolves once it is connected. */
  async function startAgent(node: string): Promise<void> {
    const proc = spawn(
      process.execPath,
      [
        AGENT_BIN,
        "run",
        "--dir",
        nodeDir(node),
        "--server",
        daemon.grpcAddress,
        ...storageFlags,
        "--sim-vms",
        "3",
        "--sim-dataset-bytes",
        String(4 * MIB),
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    agents.set(node, proc);
    let out = "";
    await new Promise<void>((resolve, reject) => {
      proc.stdout?.on("data", (d: Buffer) => {
        out += d.toString();
        if (out.includes('"msg":"connected to the control plane"')) resolve();
      });
      proc.once("exit", (code) => reject(new Error(`agent ${node} exited ${code}:\n${out}`)));
    });
  }

  async function stopAgent(node: string): Promise<void> {
    const proc = agents.get(node);
    if (proc === undefined || proc.exitCode !== null) return;
    const gone = new Promise((r) => proc.once("exit", r));
    proc.kill("SIGTERM");
    await gone;
  }

  /** The snapshots of the dataset on a node, as its agent's storage holds them. */
  const snapshotsOn = (node: string) => storageSnapshots(nodeDir(node), DATASET);

  const jobStatus = async () => {
    const r = await hvctl("-o", "json", "replication", "status", "a-to-b");
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as Record<string, unknown>;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-agent-repl-"));
    daemon = await startDevDaemon(dir, {
      simulation: { enabled: false },
      cluster: { heartbeatIntervalMs: 1000 },
      storage: { replication: { scheduler: false } },
    });
    for (const node of ["node-a", "node-b", "node-c"])
      await enrollAgent(hvctl, daemon.grpcAddress, dir, node);
    await Promise.all([startAgent("node-a"), startAgent("node-b")]);
  });
  after(async () => {
    for (const p of agents.values()) p.kill("SIGKILL");
    daemon?.kill();
  });

  it("runs a job full, then incremental, from agent A to agent B at the job's bandwidth; B's dataset holds the snapshots", async () => {
    assert.equal(await snapshotsOn("node-b"), undefined, "B holds no copy yet");
    const plan = await hvctl(
      "replication",
      "plan",
      "--dataset",
      DATASET,
      "--source",
      "node-a",
      "--target",
      "node-b",
      "--id",
      "a-to-b",
      "--bandwidth",
      "1M",
    );
    assert.equal(plan.code, 0, plan.stderr);
    const started = performance.now();
    const full = await hvctl("replication", "run", "a-to-b");
    const fullMs = performance.now() - started;
    assert.equal(full.code, 0, `${full.stdout}\n${full.stderr}`);
    // 4 MiB at 1 MiB/s: the limit holds across the relay (unthrottled, the run takes about 1.5 s).
    assert.ok(fullMs >= 3500, `a 4 MiB full send at 1 MiB/s took only ${Math.round(fullMs)} ms`);
    const first = await snapshotsOn("node-b");
    assert.equal(first?.length, 1, `B: ${first}`);
    assert.match(first?.[0] ?? "", /^repl-a-to-b-/);
    assert.deepEqual(await snapshotsOn("node-a"), first, "A keeps the snapshot it sent");
    let status = await jobStatus();
    assert.equal(status.incremental ?? false, false);
    const fullBytes = Number(status.bytesTransferred);
    assert.ok(
      fullBytes >= 4 * MIB && fullBytes < 4 * MIB + 4096,
      `full send of ${fullBytes} bytes`,
    );

    const incremental = await hvctl("replication", "run", "a-to-b");
    assert.equal(incremental.code, 0, `${incremental.stdout}\n${incremental.stderr}`);
    const second = await snapshotsOn("node-b");
    assert.equal(second?.length, 2, `B: ${second}`);
    assert.equal(second?.[0], first?.[0]);
    status = await jobStatus();
    assert.equal(status.incremental, true);
    assert.equal(status.baseSnapshotName, first?.[0]);
    assert.ok(
      Number(status.bytesTransferred) < 4 * MIB,
      `an incremental send moves less than the dataset: ${status.bytesTransferred}`,
    );
  });

  it("refuses forged tickets from the source's, the target's and a third node's certificate; nothing changes", async () => {
    const before = await snapshotsOn("node-b");
    const forged = randomBytes(32).toString("base64url");
    for (const node of ["node-a", "node-b", "node-c"]) {
      const err = await download(node, forged).then(
        () => undefined,
        (e: grpc.ServiceError) => e,
      );
      assert.equal(err?.code, grpc.status.PERMISSION_DENIED, `${node}: ${err?.details}`);
      assert.match(err?.details ?? "", /transfer ticket refused/);
      const up = await upload(node, forged, Buffer.alloc(1000));
      assert.equal(up.code, grpc.status.PERMISSION_DENIED, `${node}: ${up.details}`);
    }
    assert.deepEqual(await snapshotsOn("node-b"), before);
    assert.doesNotMatch(readFileSync(join(dir, "audit.log"), "utf8"), new RegExp(forged));
    assert.ok(!JSON.stringify(daemon.logs).includes(forged), "the ticket is never logged");
  });

  it("a real ticket is refused to a third node's certificate and when used twice; the target keeps its copy", async () => {
    const kept = await snapshotsOn("node-b");
    await stopAgent("node-b");
    // With B's agent away, a run fails with a reason that says so, and changes nothing.
    const away = await hvctl("replication", "run", "a-to-b");
    assert.notEqual(away.code, 0);
    assert.equal((await jobStatus()).lastErrorReason, "AGENT_NOT_CONNECTED");
    assert.deepEqual(await snapshotsOn("node-b"), kept);
    assert.equal(
      (await snapshotsOn("node-a"))?.length,
      kept?.length,
      "A's unsent snapshot is gone",
    );
    // The test speaks for node B on its stream: the control plane hands it the real ticket.
    const fake = fakeTarget(daemon.grpcAddress, nodeDir("node-b"), DATASET, kept ?? []);
    try {
      const run = hvctl("replication", "run", "a-to-b");
      const ticket = await fake.ticket;
      const third = await download("node-c", ticket).then(
        () => undefined,
        (e: grpc.ServiceError) => e,
      );
      assert.equal(third?.code, grpc.status.PERMISSION_DENIED, "node-c fetched B's stream");
      let streaming = () => {};
      const underWay = new Promise<void>((r) => {
        streaming = r;
      });
      const legit = downloadTransfer(daemon.grpcAddress, nodeDir("node-b"), ticket, () =>
        streaming(),
      );
      // While the first use streams (the job's 1 MiB/s holds it open), a second one is refused.
      // Asked once the first has bytes flowing, not after a fixed 300 ms: on a loaded machine
      // the first might not have reached the server by then, and the second would take it.
      await Promise.race([underWay, legit.catch(() => 0)]);
      const again = await download("node-b", ticket).then(
        () => undefined,
        (e: grpc.ServiceError) => e,
      );
      assert.equal(again?.code, grpc.status.PERMISSION_DENIED, "a ticket used twice");
      assert.ok((await legit) > 0, "the ticket still works for its own node, once");
      const after = await download("node-b", ticket).then(
        () => undefined,
        (e: grpc.ServiceError) => e,
      );
      assert.equal(after?.code, grpc.status.PERMISSION_DENIED, "a ticket used after its transfer");
      fake.fail();
      const r = await run;
      assert.notEqual(r.code, 0, "the run fails: the target never received");
      const log = JSON.stringify(daemon.logs);
      assert.ok(!log.includes(ticket), "the ticket is never logged");
    } finally {
      fake.close();
    }
    await startAgent("node-b");
    assert.deepEqual(await snapshotsOn("node-b"), kept, "B's copy is as it was");
    const next = await hvctl("replication", "run", "a-to-b");
    assert.equal(next.code, 0, `${next.stdout}\n${next.stderr}`);
    assert.equal((await snapshotsOn("node-b"))?.length, (kept?.length ?? 0) + 1);
  });

  /** DownloadTransfer with a node's certificate; resolves with the bytes received. */
  const download = (node: string, ticket: string) =>
    downloadTransfer(daemon.grpcAddress, nodeDir(node), ticket);

  /** UploadTransfer with a node's certificate; the status it ended with. */
  function upload(node: string, ticket: string, data: Buffer): Promise<grpc.ServiceError> {
    const ch = channelOf(node);
    const call = ch.makeBidiStreamRequest(
      "/debvisor.v1.AgentService/UploadTransfer",
      (m: Uint8Array) => Buffer.from(m),
      (b: Buffer) => b,
      new grpc.Metadata(),
      { deadline: Date.now() + 10_000 },
    );
    const ended = new Promise<grpc.ServiceError>((resolve) => {
      call.on("error", resolve);
      call.on("data", () => {});
      call.on("end", () => resolve({ code: grpc.status.OK } as grpc.ServiceError));
    });
    call.write(toBinary(TransferChunkSchema, create(TransferChunkSchema, { ticket })));
    call.write(toBinary(TransferChunkSchema, create(TransferChunkSchema, { data })));
    call.end();
    return ended.finally(() => ch.close());
  }
});
