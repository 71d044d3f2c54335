// A node's stream (a stolen certificate, a buggy agent) sending as fast as it
// can: every message is a store write or read (a heartbeat rewrites the
// node's record, and every node watch hears of it), and a unary Heartbeat
// is held to the per-principal rate limit. The stream is paced instead of
// refused: past its burst, the hub reads one message per token.
import "reflect-metadata";
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { hideIpSniWarning } from "../src/client/index.js";
import type { DaemonProcess } from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";
import {
  bareHealth,
  bareHello,
  daemonWithNode,
  nodeChannel,
  rawAgentStream,
} from "./helpers/node-stream.js";

hideIpSniWarning();
const RATE = 50;
const BURST = 100;

describe("a node's stream sending as fast as it can", () => {
  let dir: string;
  let daemon: DaemonProcess;

  before(async () => {
    ({ dir, daemon } = await daemonWithNode(
      "dv-agent-flood-",
      { agents: { messageRate: { ratePerSecond: RATE, burst: BURST } } },
      "node-f",
    ));
  });
  after(() => daemon?.kill());

  it("is read at the node's message rate past its burst, and keeps its stream", async () => {
    const ch = nodeChannel(daemon.grpcAddress, join(dir, "node-f"));
    const stream = rawAgentStream(ch);
    const count = (kind: string) => stream.got.filter((m) => m.kind.case === kind).length;
    const health = bareHealth("node-f");
    stream.send(bareHello("node-f"));
    await eventually(() => assert.ok(count("welcome") > 0), { timeoutMs: 15_000 });
    const flood = 1000;
    const started = Date.now();
    for (let sequence = 1; sequence <= flood; sequence++)
      stream.send({ kind: { case: "heartbeat", value: { sequence: BigInt(sequence), health } } });
    await sleep(2000);
    const renewed = count("leaseRenewed");
    const seconds = (Date.now() - started) / 1000;
    // Each confirmed heartbeat was read and written; a quarter of the rate's slack.
    const allowed = BURST + RATE * seconds + RATE / 4;
    assert.ok(
      renewed <= allowed,
      `${renewed} of ${flood} heartbeats handled in ${seconds.toFixed(1)} s: at most ${Math.floor(allowed)} allowed`,
    );
    // Paced, not refused: the stream goes on and the heartbeats keep being confirmed.
    await eventually(
      () =>
        assert.ok(
          count("leaseRenewed") >= renewed + RATE / 2,
          `${count("leaseRenewed")} confirmed`,
        ),
      { timeoutMs: 10_000 },
    );
    assert.equal(stream.failed(), undefined, "the stream stays");
    stream.call.cancel();
    ch.close();
  });
});
