import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { AUDIT_INTENTS, currentGeneration } from "../src/cluster/index.js";
import { VmRecordSchema } from "../src/gen/debvisor/store/v1/records_pb.js";
import { OperationKind, OperationOutcome } from "../src/gen/debvisor/v1/agent_pb.js";
import { getMessage } from "../src/store/index.js";
import { startEtcd } from "./helpers/etcd-server.js";
import { eventually } from "./helpers/eventually.js";
import {
  FAST_HA_CLUSTER,
  type FencingCluster,
  startFencingCluster,
} from "./helpers/fencing-cluster.js";
import { recordWatches } from "./helpers/watch-recorder.js";

/**
 * Conflicts resolved by generation, with real processes: a node whose HA
 * VMs were failed over comes back with its copies; the control plane sends
 * it the VM's current generation and its agent stops and undefines each
 * copy, because the copy is older; a removal whose generation is not newer
 * than the copy's changes nothing.
 */
describe("stale copies removed by generation (agents)", async () => {
  const etcd = await startEtcd();
  // Not installed: skipped with a notice (under CI=true startEtcd throws instead).
  if (etcd === undefined) return;
  const NODES = ["node-a", "node-b", "node-c"] as const;
  const VM = "node-a-vm-001";
  let c: FencingCluster;
  let host = "";
  const staleNodes = async () =>
    (await getMessage(c.store, VmRecordSchema, `vms/${VM}`))?.message.staleCopies.map(
      (s) => s.nodeId,
    ) ?? [];

  before(async () => {
    c = await startFencingCluster({
      etcd,
      nodes: NODES,
      cluster: FAST_HA_CLUSTER,
    });
  });
  after(async () => {
    await c?.close();
    await etcd.stop();
  });

  it("a node back with copies of VMs failed over: each copy is stopped and undefined there, the conflict clears, an event and the audit say so", async () => {
    await eventually(async () => assert.ok((await currentGeneration(c.store, VM)) > 0n));
    const a = c.agents.get("node-a");
    a?.proc.kill("SIGKILL");
    if (a !== undefined && a.proc.exitCode === null)
      await new Promise((r) => a.proc.once("exit", r));
    // Failed over once node-a's lease and the fence delay are gone.
    host = await eventually(
      async () => {
        const b = await c.domains("node-b");
        const on = b[VM] === "running" ? "node-b" : "node-c";
        assert.equal((await c.domains(on))[VM], "running", "failed over");
        return on;
      },
      { timeoutMs: 30_000, intervalMs: 250 },
    );
    const generation = await currentGeneration(c.store, VM);
    // Every intent written from here on (the removal's, kept until the trail took it).
    const stop = new AbortController();
    const intents = recordWatches(c.store, AUDIT_INTENTS, stop.signal);
    intents.open(1, (await c.store.revision()) + 1);
    // node-a comes back with its stopped copy.
    c.run("node-a");
    await eventually(
      async () => {
        assert.equal((await c.domains("node-a"))[VM], undefined, "undefined on node-a");
        assert.ok(c.actions("node-a").includes(`force-undefine ${VM}`), "by its hypervisor");
        assert.deepEqual(await staleNodes(), [], "the conflict is gone");
      },
      { timeoutMs: 30_000, intervalMs: 250 },
    );
    assert.equal((await c.domains(host))[VM], "running", "the VM runs on at its placement");
    assert.equal(await currentGeneration(c.store, VM), generation, "and stays placed there");
    const removed = c.agents
      .get("node-a")
      ?.logs.find((l) => l.msg === "stale copy removed" && l.vm === VM);
    assert.equal(removed?.generation, String(generation));
    // The event of the VM (recorded in the background: it can land just after the node's report
    // cleared the conflict, seen in a CI run), and the audit record of system:reconciler.
    await eventually(
      async () => {
        const ev = await c.hvctl("-o", "json", "events", "--for", `vm/${VM}`);
        assert.equal(ev.code, 0, ev.stderr);
        const { events } = JSON.parse(ev.stdout) as { events: { type: string; message: string }[] };
        const told = events.find((e) => e.type === "StaleCopyRemoved");
        assert.match(told?.message ?? "", /stale copy on node-a stopped and undefined/);
      },
      { timeoutMs: 10_000, intervalMs: 250 },
    );
    const audit = readFileSync(join(c.dir, "audit.log"), "utf8")
      .split("\n")
      .filter((l) => l.includes('"vm.stale-copy"') && l.includes(`vm_id=${VM} `));
    assert.equal(audit.length, 1, "audited once");
    assert.match(audit[0] ?? "", /"decision":"removed"/);
    // Under the removal's id (its intent's): a retold duplicate reads as the same act.
    assert.match(audit[0] ?? "", /"requestId":"[0-9a-f-]{36}"/);
    // One intent per removal (node-a held copies of each of its VMs failed over), written
    // with its go-ahead, each audited, and gone once the trail took it.
    await eventually(async () => {
      assert.deepEqual((await c.store.range(AUDIT_INTENTS)).kvs, []);
      const removals = readFileSync(join(c.dir, "audit.log"), "utf8")
        .split("\n")
        .filter((l) => l.includes('"vm.stale-copy"')).length;
      assert.ok(removals >= 1);
      assert.equal(intents.seen[0]?.size, removals, "one intent per removal");
    });
    stop.abort();
    await intents.done();
  });

  it("a removal whose generation is not newer than the copy's changes nothing (the current copy, or a late removal)", async () => {
    const generation = await currentGeneration(c.store, VM);
    const seen = c.actions(host).length;
    for (const [i, g] of [generation, generation - 1n].entries()) {
      await c.submit(host, `late-removal-${i}`, OperationKind.REMOVE_STALE_COPY, VM, g);
      const done = await c.waitDone(host, `late-removal-${i}`);
      assert.equal(done.result?.outcome, OperationOutcome.FAILED);
      assert.equal(done.result?.reason, "COPY_NOT_STALE", done.result?.message);
    }
    assert.equal((await c.domains(host))[VM], "running");
    assert.deepEqual(c.actions(host).slice(seen), [], "its hypervisor did nothing");
  });
});
