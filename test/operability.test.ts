import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { openChannel, resolveContext } from "../src/client/index.js";
import { GetNodeRequestSchema, NodeInfoSchema } from "../src/gen/debvisor/v1/node_pb.js";
import {
  DAEMON_BIN,
  devDaemonArgs,
  HVCTL_BIN,
  runProcess,
  startDaemonProcess,
} from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";
import { rawUnary } from "./helpers/grpc-client.js";
import { runsAsRoot } from "./helpers/required-tools.js";

const REGISTER = "/debvisor.v1.NodeService/RegisterNode";
const GET_NODE = "/debvisor.v1.NodeService/GetNode";
const register = (id: string) =>
  Buffer.from(
    toBinary(NodeInfoSchema, create(NodeInfoSchema, { id: { id }, hostname: `${id}.example` })),
  );
const getNode = (id: string) =>
  Buffer.from(toBinary(GetNodeRequestSchema, create(GetNodeRequestSchema, { id: { id } })));
const adminChannel = (dir: string, address: string) =>
  openChannel({ ...resolveContext(join(dir, "hvctl.yaml"), "dev"), server: address });
const readyz = async (http: string) => {
  const res = await fetch(`http://${http}/readyz`);
  return { status: res.status, body: await res.text() };
};

describe("one daemon per data directory", () => {
  it("refuses a second daemon on the same directory, which touches nothing; the first keeps working", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-lock-"));
    const first = await startDaemonProcess(devDaemonArgs(dir));
    const admin = adminChannel(dir, first.grpcAddress);
    try {
      assert.equal((await rawUnary(admin, REGISTER, register("n-one"))).error, undefined);
      const audit = join(dir, "audit.log");
      const before = { audit: readFileSync(audit), db: statSync(join(dir, "state.db")).mtimeMs };
      // Other ports, same directory: the README's failover demo does exactly this.
      const second = await runProcess(process.execPath, [DAEMON_BIN, ...devDaemonArgs(dir)], {
        timeoutMs: 20_000,
      });
      assert.notEqual(second.code, 0);
      assert.match(second.stderr, new RegExp(`data directory in use by pid ${first.proc.pid}`));
      assert.deepEqual(readFileSync(audit), before.audit, "the audit trail is untouched");
      assert.equal(
        statSync(join(dir, "state.db")).mtimeMs,
        before.db,
        "the state file is untouched",
      );
      // The first daemon still writes, and its trail still verifies.
      assert.equal((await rawUnary(admin, REGISTER, register("n-two"))).error, undefined);
      const verify = await runProcess(process.execPath, [
        HVCTL_BIN,
        "--config",
        join(dir, "hvctl.yaml"),
        "audit",
        "verify",
        audit,
      ]);
      assert.equal(verify.code, 0, verify.stdout + verify.stderr);
    } finally {
      admin.close();
      first.kill();
      await first.exited;
    }
    // A crashed holder (kill -9 above) leaves its lock behind; the next start takes it over.
    const again = await startDaemonProcess(devDaemonArgs(dir));
    again.kill();
    await again.exited;
  });
});

describe("/readyz and grpc.health.v1", () => {
  it("say 503 with the reason while the disk is full, and recover by themselves", async (t) => {
    if (!runsAsRoot(t, "to mount a tmpfs")) return;
    const dir = mkdtempSync(join(tmpdir(), "dv-readyz-"));
    const mnt = mkdtempSync(join(tmpdir(), "dv-readyz-mnt-"));
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt]);
    const cfg = join(dir, "rpcd.yaml");
    // Both the audit trail and the state file on the small disk; reads stay allowed.
    writeFileSync(
      cfg,
      JSON.stringify({
        audit: { path: join(mnt, "audit.log"), allowReadsWhenFailing: true },
        store: { path: join(mnt, "state.db") },
      }),
    );
    const d = await startDaemonProcess([...devDaemonArgs(dir), "--config", cfg]);
    const admin = adminChannel(dir, d.grpcAddress);
    const filler = join(mnt, "filler");
    try {
      assert.deepEqual(await readyz(d.httpAddress), { status: 200, body: "ready\n" });
      assert.equal((await rawUnary(admin, REGISTER, register("n-before"))).error, undefined);
      try {
        writeFileSync(filler, Buffer.alloc(8 * 1024 * 1024));
      } catch {
        // ENOSPC: the filler took every byte there was.
      }
      // The probe finds the store full on its own; the audit file's last page may
      // still hold a few records, so call until the trail refuses.
      let refused = await rawUnary(admin, REGISTER, register("n-full-0"));
      for (
        let i = 1;
        i < 200 && refused.trailers?.get("debvisor-error-reason")[0] !== "AUDIT_UNAVAILABLE";
        i++
      )
        refused = await rawUnary(admin, REGISTER, register(`n-full-${i}`));
      const failing = await eventually(
        async () => {
          const r = await readyz(d.httpAddress);
          return (
            r.status === 503 &&
            /state store cannot be written/.test(r.body) &&
            /audit trail cannot be written/.test(r.body)
          );
        },
        { timeoutMs: 10_000 },
      );
      const body = (await readyz(d.httpAddress)).body;
      assert.ok(failing, body);
      assert.match(body, /^not ready: /);
      const health = await rawUnary(admin, "/grpc.health.v1.Health/Check", Buffer.alloc(0));
      assert.equal(health.error, undefined);
      // HealthCheckResponse{status: NOT_SERVING (2)}
      assert.deepEqual([...(health.response ?? [])], [0x08, 0x02]);
      // audit.allowReadsWhenFailing: a read is answered, a write refused.
      const read = await rawUnary(admin, GET_NODE, getNode("n-before"));
      assert.equal(read.error, undefined, read.error?.message);
      const write = await rawUnary(admin, REGISTER, register("n-refused"));
      assert.equal(write.error?.code, grpc.status.UNAVAILABLE);
      rmSync(filler);
      // No call needed: the probe notices the room.
      const back = await eventually(async () => (await readyz(d.httpAddress)).status === 200, {
        timeoutMs: 15_000,
      });
      assert.ok(back, (await readyz(d.httpAddress)).body);
      const serving = await rawUnary(admin, "/grpc.health.v1.Health/Check", Buffer.alloc(0));
      assert.deepEqual([...(serving.response ?? [])], [0x08, 0x01]);
    } finally {
      admin.close();
      d.kill();
      await d.exited;
      execFileSync("umount", [mnt]);
    }
  });
});
