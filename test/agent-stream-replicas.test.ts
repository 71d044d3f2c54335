// One node, one stream, across control-plane replicas: a stolen node
// certificate that connects to another replica than the real agent's
// replaces the real agent's stream there too (the agent notices and
// reconnects), instead of receiving the node's operations beside it unseen.
import "reflect-metadata";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { hideIpSniWarning } from "../src/client/index.js";
import { createAgentOperations } from "../src/cluster/index.js";
import { systemClock } from "../src/core/index.js";
import { OperationKind } from "../src/gen/debvisor/v1/agent_pb.js";
import { createEtcdStore, type KvStore } from "../src/store/index.js";
import { enrollAgent } from "./helpers/agent-process.js";
import { type DaemonProcess, startDevDaemon, startReplica } from "./helpers/daemon-process.js";
import { startEtcd } from "./helpers/etcd-server.js";
import { eventually } from "./helpers/eventually.js";
import { hvctlInProcess } from "./helpers/hvctl-in-process.js";
import { bareHello, nodeChannel, rawAgentStream } from "./helpers/node-stream.js";

hideIpSniWarning();

describe("a node's streams on two control-plane replicas", async () => {
  const etcd = await startEtcd();
  // Not installed: skipped with a notice (under CI=true startEtcd throws instead).
  if (etcd === undefined) return;
  const prefix = `/replica-streams-${process.pid}/`;
  let dir: string;
  let first: DaemonProcess;
  let second: DaemonProcess;
  let store: KvStore;
  const hvctl = (...args: string[]) => hvctlInProcess(join(dir, "hvctl.yaml"), ...args);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-replica-streams-"));
    const shared = {
      simulation: { enabled: false },
      store: { backend: "etcd", endpoints: [etcd.endpoint], prefix },
    };
    first = await startDevDaemon(dir, shared);
    // The second replica: same store and cluster CA, a data directory of its own.
    second = await startReplica(dir, "second", shared);
    store = createEtcdStore({ endpoints: [etcd.endpoint], prefix });
    await enrollAgent(hvctl, first.grpcAddress, dir, "node-x");
  });
  after(async () => {
    first?.kill();
    second?.kill();
    await store?.close();
    await etcd.stop();
  });

  /** A stream of node-x's certificate to `address`: what it received, and how it ended. */
  function connect(address: string) {
    const ch = nodeChannel(address, join(dir, "node-x"));
    const stream = rawAgentStream(ch);
    stream.send(bareHello("node-x", ["driver:sim", "op:start-vm"]));
    return {
      /** What it received: `welcome`, `dispatch ID`, ... */
      got: () =>
        stream.got.map((m) =>
          m.kind.case === "dispatch" ? `dispatch ${m.kind.value.operationId}` : `${m.kind.case}`,
        ),
      failed: stream.failed,
      close() {
        stream.call.cancel();
        ch.close();
      },
    };
  }

  it("a stream to another replica replaces the node's stream on the first, which gets no more operations", async () => {
    const real = connect(first.grpcAddress);
    await eventually(() => assert.ok(real.got().includes("welcome")), { timeoutMs: 15_000 });
    const thief = connect(second.grpcAddress);
    try {
      await eventually(() => assert.ok(thief.got().includes("welcome")), { timeoutMs: 15_000 });
      const ended = await eventually(
        () => {
          const f = real.failed();
          assert.ok(f !== undefined, "the first replica's stream was not replaced");
          return f;
        },
        { timeoutMs: 10_000 },
      );
      assert.equal(ended.code, grpc.status.ABORTED);
      assert.match(ended.details, /replaced/);
      const ops = createAgentOperations(store, systemClock);
      await ops.submit(
        "node-x",
        {
          operationId: "op-after",
          kind: OperationKind.START_VM,
          vmId: "",
          params: {},
          generation: 0n,
        },
        "test",
      );
      await eventually(() => assert.ok(thief.got().includes("dispatch op-after")), {
        timeoutMs: 10_000,
      });
      assert.ok(!real.got().includes("dispatch op-after"), "delivered to one stream only");
    } finally {
      real.close();
      thief.close();
    }
  });

  it("streams opened at once to both replicas leave one live, not two", async () => {
    // A stolen certificate that connects to the other replica while the
    // real agent (re)connects: each replica writes the node's presence,
    // and the one whose write came second must end the other's stream.
    for (let round = 0; round < 12; round++) {
      const a = connect(first.grpcAddress);
      const b = connect(second.grpcAddress);
      try {
        const settled = (s: typeof a) => s.got().includes("welcome") || s.failed() !== undefined;
        await eventually(() => assert.ok(settled(a) && settled(b)), { timeoutMs: 15_000 });
        // Until each replica's presence watch has seen the other's write: on a loaded
        // machine that can take longer than the 1.5 s this once waited.
        await eventually(
          () => {
            const live = [a, b].filter((s) => s.failed() === undefined);
            assert.ok(live.length <= 1, `round ${round}: both streams stayed live`);
          },
          { timeoutMs: 15_000, intervalMs: 100 },
        );
      } finally {
        a.close();
        b.close();
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  });
});
