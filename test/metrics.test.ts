import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import {
  GetMigrationRequestSchema,
  MigrationResultSchema,
  VMMigrateSpecSchema,
} from "../src/gen/debvisor/v1/migration_pb.js";
import { HealthSchema, NodeInfoSchema } from "../src/gen/debvisor/v1/node_pb.js";
import { VmListSchema, VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";
import { rawUnary, testChannel } from "./helpers/grpc-client.js";
import { findOnPath, missingTool } from "./helpers/required-tools.js";

const promtool = findOnPath("promtool");
const DEPLOY = fileURLToPath(new URL("../../deploy/", import.meta.url));
const RULES = join(DEPLOY, "prometheus", "debvisor-rpc.rules.yml");
const RULE_TESTS = join(DEPLOY, "prometheus", "debvisor-rpc.rules.test.yml");
const DASHBOARD = join(DEPLOY, "grafana", "debvisor-rpcd.json");

/** Metric families a PromQL text refers to (histogram series mapped to their family). */
function familiesIn(text: string): Set<string> {
  const out = new Set<string>();
  for (const m of text.matchAll(/\b(?:grpc_server|debvisor)_[a-z0-9_]+/g))
    out.add(m[0].replace(/_(bucket|count|sum)$/, ""));
  return out;
}

/** The value of one sample of the exposition `text`, or undefined when absent. */
function sample(
  text: string,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const at = line.lastIndexOf(" ");
    const set = line.slice(name.length, at);
    if (Object.entries(labels).every(([k, v]) => set.includes(`${k}="${v}"`)))
      return Number(line.slice(at + 1));
  }
  return undefined;
}

describe("/metrics of a live daemon", () => {
  let dir: string;
  let daemon: DaemonProcess;
  const channels: grpc.Client[] = [];
  const tls = () => ({
    caPem: readFileSync(join(dir, "pki", "ca.crt"), "utf8"),
    certPem: readFileSync(join(dir, "pki", "admin.crt"), "utf8"),
    keyPem: readFileSync(join(dir, "pki", "admin.key"), "utf8"),
  });
  /** A new channel: its own TLS connection (a distinct option keeps grpc-js from sharing one). */
  const connect = (n: number) => {
    const ch = testChannel(daemon.grpcAddress, tls(), { "grpc.primary_user_agent": `conn-${n}` });
    channels.push(ch);
    return ch;
  };
  const scrape = async () => (await fetch(`http://${daemon.httpAddress}/metrics`)).text();
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-metrics-"));
    daemon = await startDevDaemon(dir);
  });
  after(() => {
    for (const c of channels) c.close();
    daemon?.kill();
  });

  it("counts unary and server-streaming calls in the standard grpc_server_* families", async () => {
    const ch = connect(0);
    const N = 4;
    for (let i = 0; i < N; i++) {
      const r = await rawUnary(ch, "/debvisor.v1.NodeService/ListNodes", Buffer.alloc(0));
      assert.equal(r.error, undefined);
    }
    const spec = create(VMMigrateSpecSchema, { vm: { vmId: "vm-001" } });
    const migrated = await rawUnary(
      ch,
      "/debvisor.v1.MigrationService/MigrateVM",
      Buffer.from(toBinary(VMMigrateSpecSchema, spec)),
    );
    assert.equal(migrated.error, undefined, migrated.error?.details);
    const { migrationId } = fromBinary(MigrationResultSchema, migrated.response ?? Buffer.alloc(0));
    const get = Buffer.from(
      toBinary(GetMigrationRequestSchema, create(GetMigrationRequestSchema, { migrationId })),
    );
    // A finished migration's watch sends exactly one message, then OK.
    for (let i = 0; i < 2; i++) {
      const got = await new Promise<number>((resolve, reject) => {
        let n = 0;
        const call = ch.makeServerStreamRequest(
          "/debvisor.v1.MigrationService/WatchMigration",
          (b: Buffer) => b,
          (b: Buffer) => b,
          get,
        );
        call.on("data", () => n++);
        call.on("error", reject);
        call.on("end", () => resolve(n));
      });
      assert.equal(got, 1);
    }
    const missing = Buffer.from(
      toBinary(
        GetMigrationRequestSchema,
        create(GetMigrationRequestSchema, { migrationId: "nope" }),
      ),
    );
    assert.equal(
      (await rawUnary(ch, "/debvisor.v1.MigrationService/GetMigration", missing)).error?.code,
      5,
    );

    const text = await scrape();
    const list = {
      grpc_type: "unary",
      grpc_service: "debvisor.v1.NodeService",
      grpc_method: "ListNodes",
    };
    assert.equal(sample(text, "grpc_server_started_total", list), N);
    assert.equal(sample(text, "grpc_server_handled_total", { ...list, grpc_code: "OK" }), N);
    assert.equal(sample(text, "grpc_server_msg_received_total", list), N);
    assert.equal(sample(text, "grpc_server_msg_sent_total", list), N);
    assert.equal(sample(text, "grpc_server_handling_seconds_count", list), N);
    assert.equal(sample(text, "grpc_server_handling_seconds_bucket", { ...list, le: "+Inf" }), N);
    const watch = {
      grpc_type: "server_stream",
      grpc_service: "debvisor.v1.MigrationService",
      grpc_method: "WatchMigration",
    };
    assert.equal(sample(text, "grpc_server_started_total", watch), 2);
    assert.equal(sample(text, "grpc_server_msg_received_total", watch), 2);
    assert.equal(sample(text, "grpc_server_msg_sent_total", watch), 2);
    assert.equal(sample(text, "grpc_server_handled_total", { ...watch, grpc_code: "OK" }), 2);
    const getMethod = { grpc_method: "GetMigration", grpc_code: "NotFound" };
    assert.equal(sample(text, "grpc_server_handled_total", getMethod), 1);
    // The migration was counted as it finished, and the cluster is described.
    await eventually(async () => {
      const t = await scrape();
      assert.equal(
        sample(t, "debvisor_migrations_total", { kind: "migrate", outcome: "succeeded" }),
        1,
      );
    });
    assert.equal(sample(text, "debvisor_nodes", { readiness: "ready" }), 3);
    // VMs by state: what ListVms shows, counted (dev mode's VMs stand still meanwhile).
    const now = await scrape();
    const listed = fromBinary(
      VmListSchema,
      (await rawUnary(ch, "/debvisor.v1.VmService/ListVms", Buffer.alloc(0))).response ??
        Buffer.alloc(0),
    ).vms;
    const running = listed.filter((v) => v.state === VmState.RUNNING).length;
    assert.ok(running > 0);
    assert.equal(sample(now, "debvisor_vms", { state: "running" }), running);
    assert.equal(
      sample(now, "debvisor_vms", { state: "stopped" }),
      listed.filter((v) => v.state === VmState.STOPPED).length,
    );
    assert.ok(
      (sample(text, "debvisor_store_request_duration_seconds_count", { op: "txn" }) ?? 0) > 0,
    );
    assert.ok((sample(text, "debvisor_audit_fsync_duration_seconds_count") ?? 0) > 0);
    assert.ok((sample(text, "debvisor_audit_records_total") ?? 0) > 0);
    assert.ok(
      (sample(text, "debvisor_certificate_expiry_seconds", { certificate: "server" }) ?? 0) >
        86_400,
    );
    assert.ok(
      (sample(text, "debvisor_certificate_expiry_seconds", { certificate: "client-ca" }) ?? 0) >
        86_400,
    );
  });

  it("counts open TLS connections in debvisor_rpc_connections", async () => {
    for (const c of channels.splice(0)) c.close();
    await eventually(async () =>
      assert.equal(sample(await scrape(), "debvisor_rpc_connections"), 0),
    );
    const three = [1, 2, 3].map(connect);
    for (const ch of three) {
      const r = await rawUnary(ch, "/debvisor.v1.NodeService/ListNodes", Buffer.alloc(0));
      assert.equal(r.error, undefined);
    }
    assert.equal(sample(await scrape(), "debvisor_rpc_connections"), 3);
    for (const c of channels.splice(0)) c.close();
    await eventually(async () =>
      assert.equal(sample(await scrape(), "debvisor_rpc_connections"), 0),
    );
  });

  it("shows each node's report clock skew in debvisor_node_report_skew_seconds, never trusting it", async () => {
    const ch = connect(90);
    try {
      const reg = create(NodeInfoSchema, { id: { id: "hv-skew" }, hostname: "hv-skew.example" });
      const r = await rawUnary(
        ch,
        "/debvisor.v1.NodeService/RegisterNode",
        Buffer.from(toBinary(NodeInfoSchema, reg)),
      );
      assert.equal(r.error, undefined, r.error?.details);
      // Its clock runs 7 s behind the server's: the report is taken, its skew measured.
      const at = Date.now() - 7000;
      const beat = create(HealthSchema, {
        nodeId: { id: "hv-skew" },
        timestamp: { seconds: BigInt(Math.floor(at / 1000)), nanos: (at % 1000) * 1_000_000 },
      });
      const h = await rawUnary(
        ch,
        "/debvisor.v1.NodeService/Heartbeat",
        Buffer.from(toBinary(HealthSchema, beat)),
      );
      assert.equal(h.error, undefined, h.error?.details);
      // Received before the answer came: the skew is the 7 s plus at most the call's own time
      // (seconds on a loaded machine, so measured, not taken as under 1 s).
      const answeredAt = Date.now();
      const skew = sample(await scrape(), "debvisor_node_report_skew_seconds", { node: "hv-skew" });
      assert.ok(
        skew !== undefined && skew <= -7 && skew >= (at - answeredAt) / 1000 - 0.01,
        `skew ${skew}, the call answered ${answeredAt - at} ms after the report's stamp`,
      );
      assert.equal(sample(await scrape(), "debvisor_nodes", { readiness: "ready" }), 4);
    } finally {
      ch.close();
      channels.splice(channels.indexOf(ch), 1);
    }
  });

  it("passes promtool check metrics", async (t) => {
    const skip = missingTool("promtool", promtool !== undefined, "apt-get install prometheus");
    if (skip) return t.skip(skip);
    const text = await scrape();
    const r = spawnSync(promtool as string, ["check", "metrics"], {
      input: text,
      encoding: "utf8",
    });
    assert.equal(r.status, 0, `promtool check metrics:\n${r.stdout}${r.stderr}`);
    // Running totals are counters: no gauge or untyped family ends in _total.
    for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm))
      if (m[1]?.endsWith("_total")) assert.equal(m[2], "counter", m[1]);
  });

  it("exposes every family the shipped dashboard and alert rules query", async () => {
    const exposed = new Set([...(await scrape()).matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]));
    const queried = familiesIn(readFileSync(DASHBOARD, "utf8") + readFileSync(RULES, "utf8"));
    assert.ok(queried.size > 15, `only ${queried.size} families queried`);
    const missing = [...queried].filter((f) => !exposed.has(f));
    assert.deepEqual(missing, [], "queried but not exposed");
  });
});

describe("the shipped Prometheus alert rules", () => {
  it("pass promtool check rules and their unit tests (promtool test rules)", (t) => {
    const skip = missingTool("promtool", promtool !== undefined, "apt-get install prometheus");
    if (skip) return t.skip(skip);
    for (const args of [
      ["check", "rules", RULES],
      ["test", "rules", RULE_TESTS],
    ]) {
      const r = spawnSync(promtool as string, args, { encoding: "utf8", timeout: 60_000 });
      assert.equal(r.status, 0, `promtool ${args.join(" ")}:\n${r.stdout}${r.stderr}`);
    }
  });
});
