import assert from "node:assert/strict";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { fromBinary } from "@bufbuild/protobuf";
import { NodeListSchema } from "../src/gen/debvisor/v1/node_pb.js";
import {
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
} from "../src/gen/grpc/health/v1/health_pb.js";
import { type DaemonProcess, runProcess, startDaemonProcess } from "./helpers/daemon-process.js";
import { missingTool, runsOk } from "./helpers/required-tools.js";

// Debian's interpreter, where python3-grpcio is installed (.ci/run installs it).
const PYTHON = "/usr/bin/python3";
const CLIENT = fileURLToPath(new URL("../../test/interop/python_client.py", import.meta.url));

describe("an independent gRPC client (Python grpcio) against debvisor-rpcd", () => {
  let daemon: DaemonProcess;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-interop-"));
    daemon = await startDaemonProcess([
      "--dev",
      "--data-dir",
      dir,
      "--listen",
      "127.0.0.1:0",
      "--metrics-listen",
      "127.0.0.1:0",
    ]);
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
});
