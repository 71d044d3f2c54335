// hvctl's "node is not ready" note while it follows an operation: cleared
// off the progress bar on a terminal, and never after the operation's final
// line (a slow GetNode). Found by a review.
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { NodeReadiness, NodeService } from "../gen/debvisor/v1/node_pb.js";
import {
  type VmOperation,
  VmOperationKind,
  VmOperationSchema,
  VmOperationState,
} from "../gen/debvisor/v1/vm_pb.js";
import type { CliContext } from "./cli-context.js";
import { followOperation } from "./vm-lifecycle-command.js";

const op = (state: VmOperationState, percent = 0): VmOperation =>
  create(VmOperationSchema, {
    id: "op-1",
    vmId: "web-1",
    kind: VmOperationKind.DELETE,
    state,
    percent,
    nodeId: { id: "node-04" },
  });

function fakeCtx(
  written: string[],
  readiness: NodeReadiness,
  getNodeDelayMs: number,
  tty: boolean,
): CliContext {
  const signals = new EventEmitter();
  const err = (t: string) => {
    written.push(t);
  };
  const ctx = {
    io: { err, tty: { stderr: tty, stdin: false }, signals, columns: 120 },
    out: (t: string) => written.push(`[stdout]${t}`),
    err,
    format: "table",
    print: (_d: unknown, human: () => string) => written.push(`[stdout]${human()}`),
    setExitCode: () => {},
    client: (service: unknown) => {
      if (service === NodeService)
        return {
          getNode: async () => {
            await new Promise((r) => setTimeout(r, getNodeDelayMs));
            return { summary: { readiness } };
          },
        };
      return {
        async *watchOperation() {
          yield op(VmOperationState.PENDING);
          await new Promise((r) => setTimeout(r, 50));
          yield op(VmOperationState.RUNNING, 40);
          await new Promise((r) => setTimeout(r, 50));
          yield op(VmOperationState.SUCCEEDED, 100);
        },
      };
    },
  };
  return ctx as unknown as CliContext;
}

describe("hvctl's note about a node that is not ready", () => {
  it("on a terminal, the note is not glued onto the live progress bar", async () => {
    const written: string[] = [];
    await followOperation(
      fakeCtx(written, NodeReadiness.NOT_READY, 5, true),
      op(VmOperationState.PENDING),
      false,
    );
    const all = written.join("");
    const at = all.indexOf("note: node-04 is not ready");
    assert.ok(at > 0, all);
    const before = all.slice(0, at);
    // What is on the terminal line just before the note: after the last \r or \n.
    const line = before.slice(Math.max(before.lastIndexOf("\n"), before.lastIndexOf("\r")) + 1);
    assert.equal(
      line.replaceAll("\u001b[2K", ""),
      "",
      `the note starts mid-line, after the bar: ${JSON.stringify(all)}`,
    );
  });

  it("the note never follows the operation's final line (a slow GetNode)", async () => {
    const written: string[] = [];
    const ctx = fakeCtx(written, NodeReadiness.NOT_READY, 300, false);
    await followOperation(ctx, op(VmOperationState.PENDING), false);
    // What an hvctl run leaves on its streams once the command returned and the event loop drains.
    await new Promise((r) => setTimeout(r, 400));
    const all = written.join("");
    const final = all.indexOf("[stdout]delete web-1 on node-04: succeeded");
    const note = all.indexOf("note: node-04 is not ready");
    assert.ok(final >= 0, all);
    assert.ok(
      note === -1 || note < final,
      `a note about waiting for node-04 came after the operation succeeded: ${JSON.stringify(all)}`,
    );
  });
});
