import assert from "node:assert/strict";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import {
  create,
  type DescMessage,
  fromBinary,
  type MessageInitShape,
  toBinary,
} from "@bufbuild/protobuf";
import { StatusCode } from "../src/gen/debvisor/v1/common_pb.js";
import {
  ListMigrationsRequestSchema,
  MigrationListSchema,
  MigrationResultSchema,
  VMMigrateSpecSchema,
} from "../src/gen/debvisor/v1/migration_pb.js";
import { HealthSchema, NodeInfoSchema, NodeListSchema } from "../src/gen/debvisor/v1/node_pb.js";
import {
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
} from "../src/gen/grpc/health/v1/health_pb.js";
import {
  type DaemonProcess,
  devDaemonArgs,
  runProcess,
  startDaemonProcess,
} from "./helpers/daemon-process.js";
import { missingTool, runsOk } from "./helpers/required-tools.js";

// Debian's interpreter, where python3-grpcio is installed (.ci/run installs it).
const PYTHON = "/usr/bin/python3";
const CLIENT = fileURLToPath(new URL("../../test/interop/python_client.py", import.meta.url));
const UPSTREAM = fileURLToPath(new URL("../../test/interop/upstream_calls.py", import.meta.url));

describe("an independent gRPC client (Python grpcio) against debvisor-rpcd", () => {
  let daemon: DaemonProcess;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-interop-"));
    daemon = await startDaemonProcess(devDaemonArgs(dir));
  });
  after(() => daemon?.kill());

  it("speaks the wire contract over mTLS: old Empty ListNodes, refusal without a certificate, public health", async (t) => {
    const present = existsSync(PYTHON) && runsOk(PYTHON, ["-c", "import grpc"]);
    const skip = missingTool("python3-grpcio", present, "apt-get install python3-grpcio");
    if (skip) return t.skip(skip);
    const pki = join(dir, "pki");
    const { code, stdout, stderr } = await runProcess(PYTHON, [
      CLIENT,
      daemon.grpcAddress,
      join(pki, "ca.crt"),
      join(pki, "admin.crt"),
      join(pki, "admin.key"),
    ]);
    assert.equal(code, 0, `python client failed (is python3-grpcio installed?):\n${stderr}`);
    const out = JSON.parse(stdout) as Record<string, string>;
    const list = fromBinary(NodeListSchema, Buffer.from(out.list_nodes_hex ?? "", "hex"));
    assert.deepEqual(
      list.nodes.map((n) => n.info?.id?.id),
      ["node-01", "node-02", "node-03"],
    );
    assert.match(out.request_id ?? "", /^[0-9a-f-]{36}$/);
    assert.equal(out.no_certificate, "UNAUTHENTICATED");
    assert.equal(out.no_certificate_details, "authentication required");
    const health = fromBinary(HealthCheckResponseSchema, Buffer.from(out.health_hex ?? "", "hex"));
    assert.equal(health.status, HealthCheckResponse_ServingStatus.SERVING);
  });

  it("accepts the ids the upstream contract allows, case-insensitively unique, and answers a retried MigrateVM with its outcome", async (t) => {
    const present = existsSync(PYTHON) && runsOk(PYTHON, ["-c", "import grpc"]);
    const skip = missingTool("python3-grpcio", present, "apt-get install python3-grpcio");
    if (skip) return t.skip(skip);
    const hostname = "Node01.Example.COM";
    const uuid = "3F2504E0-4F89-11D3-9A0C-0305E82C3301";
    // A full DNS name: four 60-character labels (243 characters).
    const long = Array.from({ length: 4 }, (_, i) => `L${i}${"x".repeat(58)}`).join(".");
    const register = (id: string) => ({
      path: "/debvisor.v1.NodeService/RegisterNode",
      request_hex: hex(NodeInfoSchema, { id: { id }, hostname: "hv.example", zone: "zone-u" }),
      timeout: 10,
    });
    const heartbeat = (id: string) => ({
      path: "/debvisor.v1.NodeService/Heartbeat",
      request_hex: hex(HealthSchema, {
        nodeId: { id },
        timestamp: { seconds: BigInt(Math.floor(Date.now() / 1000)) },
      }),
      timeout: 10,
    });
    const migrate = (timeout: number) => ({
      path: "/debvisor.v1.MigrationService/MigrateVM",
      request_hex: hex(VMMigrateSpecSchema, { vm: { vmId: "vm-001" }, allowDowntime: true }),
      timeout,
    });
    const answers = await upstream([
      register(hostname),
      register(uuid),
      register(uuid.toLowerCase()),
      register(long),
      heartbeat(hostname.toUpperCase()),
      register(`${long}.x`.padEnd(254, "y")),
      // A client whose deadline passes mid-migration retries the same call...
      migrate(0.05),
      migrate(60),
      // ...and once more after it succeeded.
      migrate(60),
    ]);
    const [h, u, uLower, l, beat, tooLong, first, retried, again] = answers;
    for (const [name, a] of Object.entries({ h, u, uLower, l, beat }))
      assert.equal(a?.code, "OK", `${name}: ${a?.details}`);
    assert.equal(tooLong?.code, "INVALID_ARGUMENT", "over the stated 253-character limit");
    assert.equal(first?.code, "DEADLINE_EXCEEDED");
    assert.equal(retried?.code, "OK", retried?.details);
    assert.equal(again?.code, "OK", `retried after success: ${again?.details}`);
    const r1 = fromBinary(MigrationResultSchema, Buffer.from(retried?.response_hex ?? "", "hex"));
    const r2 = fromBinary(MigrationResultSchema, Buffer.from(again?.response_hex ?? "", "hex"));
    assert.equal(r1.status, StatusCode.STATUS_OK, r1.message);
    assert.equal(r2.migrationId, r1.migrationId, "the retry reports the same migration");

    const [listed, migrations] = await upstream([
      { path: "/debvisor.v1.NodeService/ListNodes", request_hex: "", timeout: 10 },
      {
        path: "/debvisor.v1.MigrationService/ListMigrations",
        request_hex: hex(ListMigrationsRequestSchema, { vm: { vmId: "vm-001" } }),
        timeout: 10,
      },
    ]);
    const ids = fromBinary(
      NodeListSchema,
      Buffer.from(listed?.response_hex ?? "", "hex"),
    ).nodes.map((n) => n.info?.id?.id ?? "");
    assert.ok(ids.includes(hostname), ids.join(" "));
    assert.ok(ids.includes(long));
    assert.equal(
      ids.filter((id) => id.toLowerCase() === uuid.toLowerCase()).length,
      1,
      "two ids differing only by case are one node",
    );
    const moves = fromBinary(
      MigrationListSchema,
      Buffer.from(migrations?.response_hex ?? "", "hex"),
    );
    assert.equal(moves.migrations.length, 1, "the retries moved the vm once");
  });

  /** Runs calls in order through the upstream-style Python client. */
  async function upstream(
    calls: { path: string; request_hex: string; timeout: number }[],
  ): Promise<{ code: string; details: string; response_hex: string; reason: string }[]> {
    const pki = join(dir, "pki");
    const { code, stdout, stderr } = await runProcess(
      PYTHON,
      [
        UPSTREAM,
        daemon.grpcAddress,
        join(pki, "ca.crt"),
        join(pki, "admin.crt"),
        join(pki, "admin.key"),
      ],
      { input: JSON.stringify(calls), timeoutMs: 120_000 },
    );
    assert.equal(code, 0, `python client failed:\n${stderr}`);
    return JSON.parse(stdout);
  }
});

function hex<D extends DescMessage>(schema: D, init: MessageInitShape<D>): string {
  return Buffer.from(toBinary(schema, create(schema, init))).toString("hex");
}
