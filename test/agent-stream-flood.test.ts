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

// Found by an adversarial review (8 December 2026): a stolen node certificate
// wrote a daemon log line per message it sent. The hub's lines that come with
// the traffic went through a repeat-limited logger (agent-hub.ts: `quiet`, one
// line per message per 10 s), but an AgentEvent ("agent event", any kind, any
// VM id) and an OperationResult ("agent operation finished", even for an
// operation id that names nothing) were written with the plain logger at info,
// one line each: at the stream's 100 messages a second (past a burst of 2,000), some
// 8.6 million lines a day per stolen certificate, its chosen strings in them,
// into the journal every replica writes to. Those lines now go through the
// same repeat-limited logger; a result of an operation sent to the node is
// still told one line each.
const SENT = 300;
/** What a repeat-limited line writes in a short test: the first, and a summary or two. */
const BOUND = 10;

describe("an agent stream's lines in the daemon log", () => {
  let dir: string;
  let daemon: DaemonProcess;

  before(async () => {
    ({ dir, daemon } = await daemonWithNode("dv-attack-logflood-", {}, "node-x"));
  });
  after(() => daemon?.kill());

  it("events and results for nothing are not logged one line each", async () => {
    const ch = nodeChannel(daemon.grpcAddress, join(dir, "node-x"));
    const stream = rawAgentStream(ch);
    stream.send(bareHello("node-x"));
    await eventually(() => assert.ok(stream.got.some((m) => m.kind.case === "welcome")), {
      timeoutMs: 15_000,
    });
    for (let i = 0; i < SENT; i++) {
      stream.send({
        kind: { case: "event", value: { kind: `made-up-${i}`, vmId: `nobody-${i}`, message: "x" } },
      });
      // A self-fenced event whose VM id the store's key check refuses: logged with its error.
      stream.send({
        kind: { case: "event", value: { kind: "self-fenced", vmId: `x\u0001${i}` } },
      });
      stream.send({
        kind: { case: "result", value: { operationId: `no-such-op-${i}`, outcome: 1 } },
      });
    }
    // Read in order: once a heartbeat sent after them is confirmed, all were handled.
    stream.send({
      kind: { case: "heartbeat", value: { sequence: 1n, health: bareHealth("node-x") } },
    });
    await eventually(() => assert.ok(stream.got.some((m) => m.kind.case === "leaseRenewed")), {
      timeoutMs: 30_000,
    });
    stream.call.end();
    const events = daemon.logs.filter((l) => l.msg === "agent event").length;
    const results = daemon.logs.filter((l) => l.msg === "agent operation finished").length;
    const fenced = daemon.logs.filter(
      (l) => l.msg === "self-fenced vm not marked to start again",
    ).length;
    assert.ok(
      events <= BOUND && results <= BOUND && fenced <= BOUND,
      `${SENT} made-up events, ${SENT} self-fenced events with a bad VM id and ${SENT} results for no operation wrote ${events} "agent event", ${fenced} "self-fenced vm not marked" (with error) and ${results} "agent operation finished" lines (bound ${BOUND} each)`,
    );
  });
});
