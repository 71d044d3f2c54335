import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { NodeInfoSchema, NodeService } from "../gen/debvisor/v1/node_pb.js";
import type { CallContext } from "./call-context.js";
import { silentLogger } from "./logger.js";
import { composeStages, type Stage, validationStage } from "./pipeline.js";
import { RpcError } from "./rpc-error.js";

function ctx(validate?: (r: unknown) => void): CallContext {
  return {
    requestId: "r1",
    method: {
      service: "s",
      name: "M",
      path: "/s/M",
      kind: "unary",
      desc: NodeService.method.registerNode,
      permission: null,
      mutating: false,
      access: "authenticated",
      validate,
      resource: undefined,
      target: { kind: "any", id: undefined, optional: false },
    },
    peer: { address: "127.0.0.1:1" },
    headers: { get: () => undefined },
    deadline: undefined,
    signal: new AbortController().signal,
    startedAt: 0,
    log: silentLogger,
    notes: {},
  };
}

describe("composeStages", () => {
  it("runs stages outermost first and lets each see the outcome of the rest", async () => {
    const order: string[] = [];
    const stage =
      (name: string): Stage =>
      async (inv, next) => {
        order.push(`${name}>`);
        const out = await next(inv);
        order.push(`<${name}`);
        return out;
      };
    const run = composeStages([stage("a"), stage("b")], async () => {
      order.push("handler");
      return { kind: "unary", response: "ok" };
    });
    assert.deepEqual(await run({ ctx: ctx(), request: {} }), { kind: "unary", response: "ok" });
    assert.deepEqual(order, ["a>", "b>", "handler", "<b", "<a"]);
  });

  it("never reaches the handler when a stage refuses", async () => {
    let reached = false;
    const refuse: Stage = async () => {
      throw new RpcError("UNAUTHENTICATED");
    };
    const run = composeStages([refuse], async () => {
      reached = true;
      return { kind: "unary", response: undefined };
    });
    await assert.rejects(
      run({ ctx: ctx(), request: {} }),
      (e: unknown) => e instanceof RpcError && e.reason === "UNAUTHENTICATED",
    );
    assert.equal(reached, false);
  });

  it("passes the context a stage derives to the stages after it", async () => {
    const tag: Stage = (inv, next) => next({ ...inv, ctx: { ...inv.ctx, tenant: "acme" } });
    const run = composeStages([tag], async (inv) => ({ kind: "unary", response: inv.ctx.tenant }));
    assert.deepEqual(await run({ ctx: ctx(), request: {} }), { kind: "unary", response: "acme" });
  });
});

describe("validationStage", () => {
  it("stops a bad request before the handler with the validator's error", async () => {
    let reached = false;
    const run = composeStages([validationStage], async () => {
      reached = true;
      return { kind: "unary", response: undefined };
    });
    const validate = () => {
      throw new RpcError("INVALID_ARGUMENT", { message: "id.id: required" });
    };
    await assert.rejects(
      run({ ctx: ctx(validate), request: create(NodeInfoSchema, { id: { id: "n1" } }) }),
      /id\.id: required/,
    );
    assert.equal(reached, false);
  });

  it("stops a request that breaks a rule declared in the protos, naming every field", async () => {
    let reached = false;
    const run = composeStages([validationStage], async () => {
      reached = true;
      return { kind: "unary", response: undefined };
    });
    const bad = create(NodeInfoSchema, { hostname: "not a host name" });
    await assert.rejects(
      run({ ctx: ctx(), request: bad }),
      (e: unknown) =>
        e instanceof RpcError &&
        e.reason === "INVALID_ARGUMENT" &&
        e.clientMessage === "id: required (and 1 more)" &&
        JSON.stringify(e.fieldViolations?.map((v) => v.field)) === '["id","hostname"]',
    );
    assert.equal(reached, false);
  });
});
