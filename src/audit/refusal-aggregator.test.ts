import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { type CallContext, RpcError, silentLogger } from "../core/index.js";
import { NodeService } from "../gen/debvisor/v1/node_pb.js";
import { openAuditLog } from "./audit-log.js";
import { verifyAuditFiles } from "./audit-verify.js";
import { createRefusalAggregator } from "./refusal-aggregator.js";

const ctx = (address: string): CallContext => ({
  requestId: "r",
  method: {
    service: "debvisor.v1.NodeService",
    name: "GetNode",
    path: "/debvisor.v1.NodeService/GetNode",
    kind: "unary",
    desc: NodeService.method.getNode,
    permission: "node:get",
    mutating: false,
    access: "authenticated",
    validate: undefined,
    resource: undefined,
    target: { kind: "any", id: undefined, optional: false },
  },
  peer: { address },
  headers: { get: () => undefined },
  deadline: undefined,
  signal: new AbortController().signal,
  startedAt: 0,
  log: silentLogger,
  notes: { decision: "unauthenticated" },
});

/** The rpc.aggregate records of the audit file at `path`. */
const aggregated = (path: string) =>
  readFileSync(path, "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Record<string, string>)
    .filter((r) => r.event === "rpc.aggregate");

describe("createRefusalAggregator", () => {
  it("keeps at most maxSources apart per interval and counts the rest under peer *", async () => {
    const path = join(mkdtempSync(join(tmpdir(), "dv-agg-")), "audit.log");
    const log = await openAuditLog({ path, logger: silentLogger });
    const agg = createRefusalAggregator({ log, maxSources: 3, intervalMs: 3_600_000 });
    for (let i = 0; i < 10; i++)
      for (let n = 0; n <= i; n++)
        agg.note(ctx(`10.0.0.${i}:4000${n}`), new RpcError("UNAUTHENTICATED"));
    // An authenticated caller's refusal keeps its own record.
    const bob = {
      ...ctx("10.0.0.1:1"),
      notes: { principal: { id: "bob", method: "apikey" as const, roles: [] } },
    };
    assert.equal(agg.note(bob, new RpcError("PERMISSION_DENIED")), false);
    await agg.close();
    await log.close();
    const recs = aggregated(path);
    const counts = recs.map((r) => [r.peer, JSON.parse(r.args ?? "{}").count]);
    assert.deepEqual(
      recs.map((r) => r.method),
      ["GetNode", "GetNode", "GetNode", ""],
      "the overflow names no method",
    );
    // 10.0.0.0 once, .1 twice, .2 three times (a port each: counted per address); the rest overflow.
    assert.deepEqual(counts, [
      ["10.0.0.0", 1],
      ["10.0.0.1", 2],
      ["10.0.0.2", 3],
      ["*", 4 + 5 + 6 + 7 + 8 + 9 + 10],
    ]);
    assert.equal(verifyAuditFiles([path]).ok, true);
  });

  it("counts each method of one source apart: a record names the method its count is of", async () => {
    const path = join(mkdtempSync(join(tmpdir(), "dv-agg-")), "audit.log");
    const log = await openAuditLog({ path, logger: silentLogger });
    const agg = createRefusalAggregator({ log, intervalMs: 3_600_000 });
    const connect = (address: string): CallContext => {
      const c = ctx(address);
      return {
        ...c,
        method: {
          ...c.method,
          name: "Connect",
          path: "/debvisor.v1.AgentService/Connect",
          service: "debvisor.v1.AgentService",
        },
      };
    };
    // A revoked node: one enrollment refused, then its agent's stream refused again and again.
    agg.note(ctx("10.0.0.7:1"), new RpcError("UNAUTHENTICATED"));
    for (let i = 0; i < 12; i++)
      agg.note(connect(`10.0.0.7:${2 + i}`), new RpcError("UNAUTHENTICATED"));
    await agg.close();
    await log.close();
    const recs = aggregated(path);
    assert.deepEqual(
      recs.map((r) => [r.service, r.method, JSON.parse(r.args ?? "{}").count]),
      [
        ["debvisor.v1.NodeService", "GetNode", 1],
        ["debvisor.v1.AgentService", "Connect", 12],
      ],
    );
  });
});
