import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import type { ManualClock } from "../src/core/index.js";
import { MigrationKind } from "../src/gen/debvisor/v1/migration_pb.js";
import { NodeReadiness } from "../src/gen/debvisor/v1/node_pb.js";
import { createEtcdStore, type KvStore } from "../src/store/index.js";
import {
  type ClusterHarness,
  HARNESS_FENCE_MS,
  HARNESS_TTL_MS,
  onRbd,
  startClusterHarness,
} from "./helpers/cluster-harness.js";
import { type EtcdServer, startEtcd } from "./helpers/etcd-server.js";

/** The skew of V2: a node's report stamps, and daemon B's clock, are this far ahead. */
const SKEW_MS = 9000;
const STEP_MS = 250;

/** Real time plus an offset: a host whose wall clock is wrong by `offsetMs`. */
function offsetClock(offsetMs: number): ManualClock {
  let offset = offsetMs;
  return {
    now: () => Date.now() + offset,
    set: (ms) => {
      offset = ms - Date.now();
    },
    advance: (ms) => {
      offset += ms;
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Two control-plane "daemons" on one etcd, over the same simulated
 * hypervisors: A (a true clock) receives the reports of node-01 to node-03,
 * B (its clock 9 s ahead) those of node-04 and leads the failover
 * controller. node-02's reports are stamped 9 s in the future. A report
 * counts as delivered to the node (it stays unfenced) when the call
 * resolved, or was refused as from the future after renewing its lease.
 */
async function twoSkewedDaemons(etcd: EtcdServer) {
  const prefix = `/skew-${process.pid}-${Math.random().toString(36).slice(2)}/`;
  const stores: KvStore[] = [
    createEtcdStore({ endpoints: [etcd.endpoint], prefix }),
    createEtcdStore({ endpoints: [etcd.endpoint], prefix }),
  ];
  const a = await startClusterHarness({
    nodes: 4,
    vmsPerNode: 6,
    failover: true,
    store: stores[0],
    clock: offsetClock(0),
  });
  const b = await startClusterHarness({
    nodes: 4,
    vmsPerNode: 6,
    failover: true,
    store: stores[1],
    sim: a.sim,
    clock: offsetClock(SKEW_MS),
  });
  // B leads: its clock is the wrong one.
  await b.runtime.controller?.tick();
  assert.equal(b.runtime.controller?.isLeader(), true);
  let aDead = false;
  const receiver = (id: string): ClusterHarness => (id === "node-04" || aDead ? b : a);
  const stopped = new Set<string>();
  /** When each node's last heartbeat left (before the store renewed its leases, so never after). */
  const sentAt = new Map<string, number>();
  const beat = async () => {
    for (const node of a.sim.nodes) {
      const id = node.id?.id ?? "";
      if (stopped.has(id)) continue;
      const health = a.sim.heartbeat(id);
      if (health === undefined) continue;
      if (id === "node-02" && health.timestamp !== undefined)
        health.timestamp.seconds += BigInt(SKEW_MS / 1000);
      try {
        sentAt.set(id, Date.now());
        await receiver(id).inventory.heartbeat(health);
        a.sim.delivered(id);
      } catch (err) {
        if ((err as { reason?: string }).reason !== "REPORT_FROM_FUTURE") throw err;
        a.sim.delivered(id);
      }
    }
  };
  /** Lets `ms` of real time pass, beating and ticking both controllers (B first) every step. */
  const run = async (ms: number, check?: () => void) => {
    for (let t = 0; t < ms; t += STEP_MS) {
      await beat();
      await b.runtime.controller?.tick();
      await a.runtime.controller?.tick();
      check?.();
      await sleep(STEP_MS);
    }
  };
  return {
    a,
    b,
    beat,
    run,
    /** Stops `id`'s heartbeats; answers when its last one left. */
    stopBeating(id: string): number {
      stopped.add(id);
      return sentAt.get(id) ?? 0;
    },
    /** A dies: its controller and runner stop; the nodes it served report to B from now on. */
    async killA() {
      aDead = true;
      await a.runtime.close();
    },
    async close() {
      await b.close();
      await a.close();
      for (const s of stores) await s.close();
    },
  };
}

describe("liveness from one clock (two daemons on one etcd)", async () => {
  const etcd = await startEtcd();
  // Not installed: skipped with a notice (under CI=true startEtcd throws instead).
  if (etcd === undefined) return;
  after(() => etcd.stop());

  it("V2: 9 s of skew restarts no healthy node's vms, and a partitioned node's vms never run twice", async () => {
    const d = await twoSkewedDaemons(etcd);
    try {
      const placed = new Map((await d.a.inventory.listVms()).map((vm) => [vm.id, vm.nodeId?.id]));
      const noDoubleRun = () => assert.deepEqual(d.a.sim.violations(), [], "a vm ran twice");
      // Healthy for longer than TTL + fence delay, twice over: nothing may move.
      await d.run(2 * (HARNESS_TTL_MS + HARNESS_FENCE_MS), noDoubleRun);
      for (const [vm, node] of placed)
        assert.equal(d.a.sim.locate(vm)?.nodeId, node, `${vm} stays on its healthy node`);
      const failovers = async () =>
        (await d.a.runtime.engine.list(undefined)).filter((m) => m.kind === MigrationKind.FAILOVER);
      assert.deepEqual(await failovers(), [], "no failover of a healthy node");
      for (const h of [d.a, d.b])
        for (const n of await h.inventory.listNodes())
          assert.equal(n.readiness, NodeReadiness.READY, `${n.info?.id?.id} ready on both daemons`);
      // The skew is measured and shown, never trusted: node-02 runs 9 s ahead of A's clock.
      const skewed = (await d.b.inventory.getNode("node-02"))?.summary.reportSkewMs ?? 0n;
      // Less the report's way from its stamp to the daemon: seconds on a loaded machine.
      assert.ok(skewed > 5000n && skewed <= 9000n, `node-02's skew shown as ${skewed} ms`);
      const behind = (await d.b.inventory.getNode("node-04"))?.summary.reportSkewMs ?? 0n;
      assert.ok(behind < -5000n, `node-04 reports 9 s behind B's clock: ${behind} ms`);

      // A partition: node-03 fences itself; its HA vms come back elsewhere, each once.
      const ha = ((await d.a.inventory.getNode("node-03"))?.vms ?? []).filter(
        (vm) => vm.ha && onRbd(vm),
      );
      assert.ok(ha.length > 0);
      d.a.sim.faults.partitionNode("node-03");
      await d.run(HARNESS_TTL_MS + HARNESS_FENCE_MS + 4000, noDoubleRun);
      for (const vm of ha) {
        const where = d.a.sim.locate(vm.id);
        assert.notEqual(where?.nodeId, "node-03", `${vm.id} restarted elsewhere`);
        assert.equal(where?.state, "running");
      }
      assert.deepEqual(
        (await failovers()).map((m) => m.vm?.vmId).sort(),
        ha.map((vm) => vm.id).sort(),
        "exactly the partitioned node's HA vms, once each",
      );
      for (const [vm, node] of placed)
        if (node !== "node-03") assert.equal(d.a.sim.locate(vm)?.nodeId, node);
    } finally {
      await d.close();
    }
  });

  it("a node goes NOT_READY on the other daemon when its lease expires after the daemon receiving its reports dies", async () => {
    const d = await twoSkewedDaemons(etcd);
    try {
      await d.run(1000);
      // A dies; node-01's agent does not come back (the others reconnect to B).
      // Measured from when the last heartbeat left, which is no later than the renewal
      // it caused (not from now: that is a step later, and made expiries look early).
      const lastRenewal = d.stopBeating("node-01");
      await d.killA();
      // Each sample: when its read was asked and when it answered (a loaded machine can put
      // seconds between them). Early is judged by the answer, late by the ask.
      const seen: { asked: number; at: number; ready: boolean; fenced: boolean }[] = [];
      for (let t = 0; t < HARNESS_TTL_MS + HARNESS_FENCE_MS + HARNESS_TTL_MS / 2 + 3000; t += 200) {
        await d.beat();
        const asked = Date.now() - lastRenewal;
        const n = await d.b.inventory.readNode("node-01");
        seen.push({
          asked,
          at: Date.now() - lastRenewal,
          ready: n?.summary.readiness === NodeReadiness.READY,
          fenced: n?.liveness.pastFenceDelay ?? false,
        });
        await sleep(200);
      }
      const down = seen.find((s) => !s.ready)?.at;
      assert.ok(down !== undefined, "node-01 went NOT_READY on B");
      // On etcd's clock: not before the TTL, and soon after (etcd checks expiry twice a second).
      assert.ok(
        down >= HARNESS_TTL_MS,
        `NOT_READY ${down} ms after the last renewal, before the TTL`,
      );
      // Still READY at a read asked more than 2 s past the TTL is late; a slow sample is not.
      const lastReady = seen.filter((s) => s.ready).at(-1)?.asked ?? 0;
      assert.ok(
        lastReady <= HARNESS_TTL_MS + 2000,
        `still READY at a read asked ${lastReady} ms after the last renewal (NOT_READY seen at ${down} ms)`,
      );
      assert.ok(
        seen.filter((s) => s.at > down).every((s) => !s.ready),
        "and stays so",
      );
      assert.equal(
        (await d.b.inventory.getNode("node-02"))?.summary.readiness,
        NodeReadiness.READY,
        "the others stay ready",
      );
      // Past the fence delay only once TTL + fence delay have passed since the last renewal.
      const fenced = seen.find((s) => s.fenced)?.at;
      assert.ok(fenced !== undefined, "node-01 went past its fence delay on B");
      // Exactly, with no margin: etcd expires leases on its own clock, never before their TTL.
      assert.ok(
        fenced >= HARNESS_TTL_MS + HARNESS_FENCE_MS,
        `past the fence delay ${fenced} ms after the last renewal: too soon`,
      );
    } finally {
      await d.close();
    }
  });
});
