import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { summarize, verifyAuditFiles } from "../src/audit/index.js";
import { createServiceClient, resolveContext } from "../src/client/index.js";
import { AccessService, CreateApiKeyResponseSchema } from "../src/gen/debvisor/v1/access_pb.js";
import { AuditService } from "../src/gen/debvisor/v1/audit_pb.js";
import { DrainNodeRequestSchema, GetNodeRequestSchema } from "../src/gen/debvisor/v1/node_pb.js";
import { ListVmsRequestSchema } from "../src/gen/debvisor/v1/vm_pb.js";
import {
  adminChannel,
  DRAIN,
  devArgs,
  GET_NODE,
  REGISTER,
  records,
  register,
} from "./helpers/audit-daemon.js";
import { startDaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";
import { rawUnary, testChannel } from "./helpers/grpc-client.js";
import { hvctlInProcess } from "./helpers/hvctl-in-process.js";
import { runsAsRoot } from "./helpers/required-tools.js";

describe("the audit trail of a running daemon", () => {
  it("records denied and unauthenticated calls, and never a secret", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-audit-e2e-"));
    const d = await startDaemonProcess(devArgs(dir));
    try {
      const admin = adminChannel(dir, d.grpcAddress);
      const issued = await createServiceClient(AccessService, admin).createApiKey({
        principal: "bob",
        roles: ["viewer"],
        description: "audit test",
      });
      const secret = issued.token.slice(21); // after "dvk_<16 hex>_"; the secret itself may contain "_"
      const bogus = `dvk_${"a".repeat(16)}_${"S".repeat(43)}`;
      const ca = resolveContext(join(dir, "hvctl.yaml")).caPem;
      const anon = testChannel(d.grpcAddress, { caPem: ca });
      const bearer = (t: string) => {
        const md = new grpc.Metadata();
        md.set("authorization", `Bearer ${t}`);
        return md;
      };
      assert.equal(
        (await rawUnary(anon, REGISTER, register("n-anon"))).error?.code,
        grpc.status.UNAUTHENTICATED,
      );
      assert.equal(
        (await rawUnary(anon, REGISTER, register("n-bogus"), bearer(bogus))).error?.code,
        grpc.status.UNAUTHENTICATED,
      );
      assert.equal(
        (await rawUnary(anon, REGISTER, register("n-bob"), bearer(issued.token))).error?.code,
        grpc.status.PERMISSION_DENIED,
      );
      // Allowed by its role, refused by the handler: another tenant's filter.
      const tina = await createServiceClient(AccessService, admin).createApiKey({
        principal: "tina",
        roles: ["viewer"],
        tenant: "acme",
      });
      const filtered = await rawUnary(
        anon,
        "/debvisor.v1.VmService/ListVms",
        Buffer.from(
          toBinary(ListVmsRequestSchema, create(ListVmsRequestSchema, { tenant: "globex" })),
        ),
        bearer(tina.token),
      );
      assert.equal(filtered.error?.code, grpc.status.PERMISSION_DENIED);
      anon.close();
      admin.close();
      d.proc.kill("SIGTERM");
      assert.equal(await d.exited, 0);

      const path = join(dir, "audit.log");
      const text = readFileSync(path, "utf8");
      for (const s of [secret, issued.token, bogus.slice(21)])
        assert.ok(!text.includes(s), "no secret in the audit trail");
      const recs = records(path);
      // Unauthenticated calls are counted per source and reason, not recorded one by one.
      const unauth = recs.filter((r) => r.decision === "unauthenticated");
      assert.equal(unauth.length, 1);
      assert.equal(unauth[0]?.event, "rpc.aggregate");
      assert.equal(unauth[0]?.code, "UNAUTHENTICATED");
      assert.equal(unauth[0]?.principal, "");
      assert.equal(unauth[0]?.peer, "127.0.0.1");
      assert.equal(JSON.parse(String(unauth[0]?.args)).count, 2);
      const denied = recs.find((r) => r.decision === "deny");
      assert.equal(denied?.principal, "bob");
      assert.equal(denied?.keyId, issued.key?.id);
      assert.equal(denied?.code, "PERMISSION_DENIED");
      assert.match(String(denied?.reason), /roles viewer: none grants node:register/);
      const tenantDenied = recs.find((r) => r.principal === "tina" && r.method === "ListVms");
      assert.deepEqual(
        [tenantDenied?.decision, tenantDenied?.reason, tenantDenied?.code],
        ["deny", "TENANT_FILTER_DENIED", "PERMISSION_DENIED"],
        "denied, not allowed, though its role let it through",
      );
      const created = recs.find((r) => r.method === "CreateApiKey" && r.event === "rpc");
      assert.equal(created?.principal, "admin");
      assert.match(String(created?.args), /"roles":\["viewer"\]/);
      assert.ok(
        recs.some((r) => r.method === "CreateApiKey" && r.event === "rpc.request"),
        "the request was recorded before it acted",
      );
      assert.equal(verifyAuditFiles([path]).ok, true);
    } finally {
      d.kill();
    }
  });

  it("records a stream when it ends, with its real outcome, after its request", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-audit-stream-"));
    const d = await startDevDaemon(dir, { simulation: { migrationMs: 4000 } });
    try {
      const admin = adminChannel(dir, d.grpcAddress);
      /** DrainNode with a deadline: the messages received and the final status code. */
      const drain = (node: string, deadlineMs: number) =>
        new Promise<{ messages: number; code: number }>((resolve) => {
          let messages = 0;
          const call = admin.makeServerStreamRequest(
            DRAIN,
            (b: Buffer) => b,
            (b: Buffer) => b,
            Buffer.from(
              toBinary(
                DrainNodeRequestSchema,
                create(DrainNodeRequestSchema, { id: { id: node }, allowDowntime: true }),
              ),
            ),
            new grpc.Metadata(),
            { deadline: Date.now() + deadlineMs },
          );
          call.on("data", () => messages++);
          call.on("error", () => {});
          call.on("status", (st: grpc.StatusObject) => resolve({ messages, code: st.code }));
        });
      // Fails inside the stream, before its first message.
      assert.equal((await drain("node-404", 10_000)).code, grpc.status.NOT_FOUND);
      // Fails midway: the deadline passes while its vms are still moving.
      const midway = await drain("node-02", 2500);
      assert.equal(midway.code, grpc.status.DEADLINE_EXCEEDED);
      assert.ok(midway.messages >= 1, "progress was streamed before the failure");
      admin.close();
      d.proc.kill("SIGTERM");
      assert.equal(await d.exited, 0);
      const path = join(dir, "audit.log");
      const drains = records(path).filter((r) => r.method === "DrainNode");
      const outcomes = drains.filter((r) => r.event === "rpc");
      assert.equal(outcomes.length, 2);
      assert.equal(outcomes[0]?.code, "NOT_FOUND");
      // The client gave up at its deadline: the server saw its deadline or the client's cancel first.
      assert.match(String(outcomes[1]?.code), /^(DEADLINE_EXCEEDED|CANCELLED)$/);
      assert.ok(Number(outcomes[1]?.durationMs) >= 2000, "recorded when it ended");
      for (const o of outcomes) {
        const request = drains.find(
          (r) => r.event === "rpc.request" && r.requestId === o.requestId,
        );
        assert.ok(request !== undefined && Number(request.seq) < Number(o.seq), "request first");
      }
      assert.equal(verifyAuditFiles([path]).ok, true);
    } finally {
      d.kill();
    }
  });

  it("counts 5,000 unauthenticated calls in a handful of records, and the chain verifies", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-audit-flood-"));
    const d = await startDevDaemon(dir, {
      audit: { refusals: { intervalMs: 3_600_000 } },
      auth: { lockout: { throttleDelayMs: 0 } },
    });
    try {
      const ca = resolveContext(join(dir, "hvctl.yaml")).caPem;
      const anon = testChannel(d.grpcAddress, { caPem: ca });
      const md = new grpc.Metadata();
      md.set("authorization", `Bearer dvk_${"b".repeat(16)}_${"S".repeat(43)}`);
      const codes = new Map<number, number>();
      for (let batch = 0; batch < 50; batch++) {
        const results = await Promise.all(
          Array.from({ length: 100 }, (_, i) =>
            rawUnary(anon, GET_NODE, Buffer.alloc(0), i % 2 === 0 ? md : undefined),
          ),
        );
        for (const r of results) {
          const code = r.error?.code ?? 0;
          codes.set(code, (codes.get(code) ?? 0) + 1);
        }
      }
      anon.close();
      assert.equal(codes.get(0), undefined, "none got through");
      d.proc.kill("SIGTERM");
      assert.equal(await d.exited, 0);
      const path = join(dir, "audit.log");
      const recs = records(path);
      const counted = recs.filter((r) => r.event === "rpc.aggregate");
      assert.ok(counted.length >= 1 && counted.length <= 3, JSON.stringify(counted));
      const calls = recs.filter((r) => r.method === "GetNode");
      assert.deepEqual(calls, counted, "every GetNode was counted, none recorded alone");
      const sum = counted.reduce((n, r) => n + Number(JSON.parse(String(r.args)).count), 0);
      assert.equal(sum, 5000);
      // Per code the client saw: RATE_LIMITED is RESOURCE_EXHAUSTED, the rest UNAUTHENTICATED.
      for (const code of [grpc.status.UNAUTHENTICATED, grpc.status.RESOURCE_EXHAUSTED]) {
        const name =
          code === grpc.status.UNAUTHENTICATED ? "UNAUTHENTICATED" : "RESOURCE_EXHAUSTED";
        const n = counted
          .filter((r) => r.code === name)
          .reduce((t, r) => t + Number(JSON.parse(String(r.args)).count), 0);
        assert.equal(n, codes.get(code) ?? 0, `${name} counted right`);
      }
      assert.equal(verifyAuditFiles([path]).ok, true);
    } finally {
      d.kill();
    }
  });

  it("reads back through AuditService and hvctl audit search / tail / verify", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-audit-read-"));
    const d = await startDaemonProcess(devArgs(dir));
    const hvctl = (...args: string[]) => hvctlInProcess(join(dir, "hvctl.yaml"), ...args);
    try {
      const admin = adminChannel(dir, d.grpcAddress);
      const audit = createServiceClient(AuditService, admin);
      // Follow first, then call: the new record arrives on the stream.
      const ac = new AbortController();
      const followed = (async () => {
        for await (const r of audit.followAuditRecords(
          { filter: { method: "GetNode" }, backlog: 0 },
          { signal: ac.signal },
        ))
          return r;
        return undefined;
      })().catch(() => undefined);
      const get = Buffer.from(
        toBinary(GetNodeRequestSchema, create(GetNodeRequestSchema, { id: { id: "node-01" } })),
      );
      // Call until the stream (open once the daemon has subscribed it) delivers one of the calls.
      const calls = new Set<string>();
      const got = await eventually(async () => {
        const called = await rawUnary(admin, GET_NODE, get);
        calls.add(String(called.trailers?.get("x-request-id")[0]));
        const r = await Promise.race([
          followed,
          new Promise<"pending">((res) => setTimeout(() => res("pending"), 200)),
        ]);
        if (r === "pending") throw new Error("the followed stream delivered no record yet");
        return r;
      });
      ac.abort();
      assert.ok(calls.has(String(got?.requestId)), "the record streamed is one of the calls");

      const search = await hvctl("audit", "search", "--method", "GetNode");
      assert.equal(search.code, 0, search.stderr);
      assert.match(search.stdout, /^TIME\s+SEQ\s+PRINCIPAL\s+METHOD/);
      assert.match(search.stdout, /\sadmin\s+GetNode\s+allow\s+OK\s/);
      const json = await hvctl("-o", "json", "audit", "search", "--event", "audit.start");
      assert.equal(JSON.parse(json.stdout.split("\n")[0] ?? "{}").event, "audit.start");
      const tail = await hvctl("audit", "tail", "-n", "2");
      assert.equal(tail.stdout.trim().split("\n").length, 3, "a header and two records");
      const denied = await hvctl("--context", "dev-operator", "audit", "tail");
      assert.equal(denied.code, 4, "operators do not hold audit:read");
      admin.close();
      d.proc.kill("SIGTERM");
      assert.equal(await d.exited, 0);
      const verify = await hvctl("audit", "verify", join(dir, "audit.log"));
      assert.equal(verify.code, 0);
      assert.match(verify.stdout, /^intact: \d+ records in 1 file\(s\)/);
      // `audit.log.*` in a shell names a torn tail a restart moved aside too: skipped, said so.
      const torn = join(dir, "audit.log.torn-2026-12-06T09-00-00-000Z");
      writeFileSync(torn, '{"seq":99,"ev');
      const withTorn = await hvctl("audit", "verify", torn, join(dir, "audit.log"));
      assert.equal(withTorn.code, 0, withTorn.stdout);
      assert.match(withTorn.stdout, /^intact: \d+ records in 1 file\(s\)\nskipped 1 torn tail/);
      writeFileSync(
        join(dir, "audit.log"),
        readFileSync(join(dir, "audit.log"), "utf8").replace(
          '"principal":"admin"',
          '"principal":"eve"',
        ),
      );
      const broken = await hvctl("audit", "verify", join(dir, "audit.log"));
      assert.equal(broken.code, 1);
      assert.match(broken.stdout, /^BROKEN at .*audit\.log:\d+: record \d+ was edited/);
    } finally {
      d.kill();
    }
  });

  it("redacts fields marked sensitive wherever they appear", () => {
    const msg = create(CreateApiKeyResponseSchema, {
      key: { id: "0123456789abcdef" },
      token: "dvk_0123456789abcdef_TOPSECRET",
    });
    const s = summarize(CreateApiKeyResponseSchema, msg);
    assert.ok(!s.includes("TOPSECRET"));
    assert.match(s, /"token":"\[redacted\]"/);
  });

  it("refuses calls while the disk is full, changes nothing, and resumes when space returns", async (t) => {
    if (!runsAsRoot(t, "to mount a tmpfs")) return;
    const dir = mkdtempSync(join(tmpdir(), "dv-full-"));
    const mnt = mkdtempSync(join(tmpdir(), "dv-full-mnt-"));
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=256k", "tmpfs", mnt]);
    const cfg = join(dir, "rpcd.yaml");
    writeFileSync(cfg, `audit:\n  path: ${join(mnt, "audit.log")}\n`);
    const d = await startDaemonProcess(devArgs(dir, "--config", cfg));
    const admin = adminChannel(dir, d.grpcAddress);
    try {
      assert.equal((await rawUnary(admin, REGISTER, register("n-before"))).error, undefined);
      const filler = join(mnt, "filler");
      try {
        writeFileSync(filler, Buffer.alloc(1024 * 1024));
      } catch {
        // ENOSPC: the filler took every byte there was.
      }
      // The audit file's last page may still hold a few records: call until the disk refuses.
      let fullId = "n-full-0";
      let refused = await rawUnary(admin, REGISTER, register(fullId));
      for (let i = 1; i < 200 && refused.error === undefined; i++) {
        fullId = `n-full-${i}`;
        refused = await rawUnary(admin, REGISTER, register(fullId));
      }
      assert.equal(refused.error?.code, grpc.status.UNAVAILABLE);
      assert.equal(refused.trailers?.get("debvisor-error-reason")[0], "AUDIT_UNAVAILABLE");
      const metrics = await (await fetch(`http://${d.httpAddress}/metrics`)).text();
      assert.match(metrics, /debvisor_audit_failing 1/);
      const get = Buffer.from(
        toBinary(GetNodeRequestSchema, create(GetNodeRequestSchema, { id: { id: "n-before" } })),
      );
      assert.equal(
        (await rawUnary(admin, GET_NODE, get)).error?.code,
        grpc.status.UNAVAILABLE,
        "reads are refused too by default",
      );
      rmSync(filler);
      await eventually(
        async () =>
          assert.equal(
            (await rawUnary(admin, REGISTER, register("n-after"))).error,
            undefined,
            "resumes once space is back",
          ),
        { timeoutMs: 6000, intervalMs: 200 },
      );
      const missing = Buffer.from(
        toBinary(GetNodeRequestSchema, create(GetNodeRequestSchema, { id: { id: fullId } })),
      );
      assert.equal(
        (await rawUnary(admin, GET_NODE, missing)).error?.code,
        grpc.status.NOT_FOUND,
        "the refused call changed nothing",
      );
      assert.equal(verifyAuditFiles([join(mnt, "audit.log")]).ok, true);
    } finally {
      admin.close();
      d.kill();
      await d.exited;
      execFileSync("umount", [mnt]);
    }
  });
});
