// A node's certificate (stolen, or a buggy agent) sends text the daemon logs:
// an event's kind and VM. The daemon run in a
// terminal (log.format auto on a TTY, or pretty) writes its lines for people
// there, so that text must reach the operator's terminal escaped, never as
// the escape sequences it is (clear the screen, move the cursor over earlier
// lines, set the window title, write the clipboard).
import "reflect-metadata";
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { hideIpSniWarning } from "../src/client/index.js";
import { OperationOutcome } from "../src/gen/debvisor/v1/agent_pb.js";
import type { DaemonProcess } from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";
import { bareHello, daemonWithNode, nodeChannel, rawAgentStream } from "./helpers/node-stream.js";

hideIpSniWarning();
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/;

describe("what a node sends reaches the daemon's terminal escaped", () => {
  let dir: string;
  let daemon: DaemonProcess;

  before(async () => {
    // What `debvisor-rpcd` writes to a terminal (format auto on a TTY), here forced on a pipe.
    ({ dir, daemon } = await daemonWithNode(
      "dv-agent-term-",
      { log: { format: "pretty" } },
      "node-t",
    ));
  });
  after(() => daemon?.kill());

  /** A stream of node-t's certificate, its Hello sent and welcomed. */
  async function openNodeStream() {
    const ch = nodeChannel(daemon.grpcAddress, join(dir, "node-t"));
    const stream = rawAgentStream(ch);
    stream.send(bareHello("node-t", ["driver:sim"]));
    await eventually(() => assert.ok(stream.got.some((m) => m.kind.case === "welcome")), {
      timeoutMs: 15_000,
    });
    return {
      send: stream.send,
      failed: stream.failed,
      close() {
        stream.call.end();
        ch.close();
      },
    };
  }

  it("an event's kind and VM are logged without their control characters", async () => {
    const stream = await openNodeStream();
    // Set the window title, clear the screen, step over the line before; a C1 CSI too.
    stream.send({
      kind: {
        case: "event",
        value: { kind: "\u001b]0;owned\u0007\u001b[2J", vmId: "\u001b[1A\u001b[2K\u009b2J" },
      },
    });
    const line = await eventually(
      () => {
        const l = daemon.lines.find((x) => x.includes("agent event"));
        assert.ok(l !== undefined, "the event logged");
        return l;
      },
      { timeoutMs: 15_000 },
    );
    assert.doesNotMatch(line, CONTROL, `written to the terminal as is: ${JSON.stringify(line)}`);
    assert.match(line, /event=\\x1b\]0;owned\\x07\\x1b\[2J vm=\\x1b\[1A\\x1b\[2K\\x9b2J/);
    stream.close();
  });

  it("a result, progress or storage report naming no possible operation is refused as invalid, not an internal error", async () => {
    for (const kind of ["result", "progress", "storageReport"] as const) {
      const stream = await openNodeStream();
      // Not an operation id (those are letters, digits, '.', '_', '-'), nor a store key.
      const operationId = "\u001b[2Kfake";
      stream.send(
        kind === "result"
          ? { kind: { case: kind, value: { operationId, outcome: OperationOutcome.SUCCEEDED } } }
          : kind === "progress"
            ? { kind: { case: kind, value: { operationId, percent: 50 } } }
            : { kind: { case: kind, value: { operationId, found: true } } },
      );
      const failed = await eventually(
        () => {
          const f = stream.failed();
          assert.ok(f !== undefined, `the stream ended (${kind})`);
          return f;
        },
        { timeoutMs: 15_000 },
      );
      assert.equal(failed.code, 3, `${kind}: INVALID_ARGUMENT, not ${failed.details}`);
      assert.match(failed.details, /operation_id/);
      stream.close();
    }
    assert.ok(
      !daemon.lines.some((l) => / ERROR .*AgentService\/Connect/.test(l)),
      "no internal error logged",
    );
  });
});
