// A heartbeat with vms_unchanged stands for the agent's last list of VMs,
// whatever became of the heartbeat that listed it: refused (from the future,
// store unavailable), ignored (older), partly claimed (MAX_CLAIMS), or left
// out as a VM placed on another node. Found by an adversarial review: no
// test failed when the hub kept a list only once the inventory had taken it.
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { RpcError, silentLogger } from "../src/core/index.js";
import { VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, type KvStore } from "../src/store/index.js";
import { connectInProcess, hubOn } from "./helpers/agent-stream.js";
import { eventually } from "./helpers/eventually.js";

function failingStore() {
  const inner = createSqliteStore({
    path: join(mkdtempSync(join(tmpdir(), "dv-vms-unchanged-")), "state.db"),
    logger: silentLogger,
  });
  const state = { failTxn: false, refused: 0 };
  const store: KvStore = Object.create(inner);
  store.txn = async (t, o) => {
    if (state.failTxn) {
      state.refused++;
      throw new RpcError("STORE_UNAVAILABLE");
    }
    return inner.txn(t, o);
  };
  return { store, state, inner };
}

const vm = (id: string, node: string) => ({
  id,
  name: id,
  state: VmState.RUNNING,
  vcpus: 1,
  memoryBytes: 1n << 30n,
  nodeId: { id: node },
});

function setup() {
  const { store, state, inner } = failingStore();
  const h = hubOn(store);
  let seq = 0n;
  const open = async (node: string) => {
    // The Hello stamped on the test's clock: stamped on the real one, a second boundary
    // between the hub's start and the Hello (a loaded machine) made the Hello newer than
    // the first heartbeat, whose report was then ignored (a CI failure, 7 December).
    const a = connectInProcess(h.hub, node, [], h.clock.now());
    await eventually(() => assert.ok(a.received.some((m) => m.kind.case === "welcome")));
    const beat = async (
      vms: ReturnType<typeof vm>[] | "unchanged",
      opts: { tsMs?: number; confirm?: boolean } = {},
    ) => {
      const sequence = ++seq;
      const refused = state.refused;
      const ms = opts.tsMs ?? h.clock.now();
      a.send({
        kind: {
          case: "heartbeat",
          value: {
            sequence,
            vmsUnchanged: vms === "unchanged",
            health: {
              nodeId: { id: node },
              timestamp: { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 },
              vms: vms === "unchanged" ? [] : vms,
            },
          },
        },
      });
      if (opts.confirm === false) {
        // Not confirmed: wait until the hub has handled it (the store was asked and refused),
        // rather than a fixed 200 ms that a loaded machine may outlast.
        await eventually(() => assert.ok(state.refused > refused, "the store was not asked"), {
          timeoutMs: 15_000,
          intervalMs: 10,
        });
        return;
      }
      await eventually(() =>
        assert.ok(
          a.received.some(
            (m) => m.kind.case === "leaseRenewed" && m.kind.value.sequence === sequence,
          ),
        ),
      );
    };
    return { a, beat };
  };
  const shown = async (node: string) =>
    ((await h.inventory.getNode(node))?.vms ?? []).map((v) => v.id).sort();
  /** The node's VMs as `expected` within 10 s: a confirmed renewal may come before its report reads back. */
  const shows = (node: string, expected: string[], message?: string) =>
    eventually(async () => assert.deepEqual(await shown(node), expected, message), {
      timeoutMs: 10_000,
    });
  return {
    ...h,
    state,
    open,
    shown,
    shows,
    async done(...agents: { close(): Promise<void> }[]) {
      for (const a of agents) await a.close();
      h.close();
      await inner.close();
    },
  };
}

describe("vms_unchanged after a heartbeat whose list was not stored", () => {
  it("a refused report from the future: the next unchanged heartbeat stands for its list", async () => {
    const s = setup();
    const { a, beat } = await s.open("n1");
    await beat([vm("a", "n1")]);
    await s.shows("n1", ["a"]);
    s.clock.advance(1000);
    await beat([vm("a", "n1"), vm("b", "n1")], { tsMs: s.clock.now() + 60_000 });
    await s.shows("n1", ["a"], "the future report's content is refused");
    s.clock.advance(1000);
    await beat("unchanged");
    await s.shows("n1", ["a", "b"]);
    await s.done(a);
  });

  it("a heartbeat the store did not take: the next unchanged heartbeat stands for its list", async () => {
    const s = setup();
    const { a, beat } = await s.open("n1");
    await beat([vm("a", "n1")]);
    s.clock.advance(1000);
    s.state.failTxn = true;
    await beat([vm("c", "n1")], { confirm: false });
    s.state.failTxn = false;
    s.clock.advance(1000);
    await beat("unchanged");
    await s.shows("n1", ["c"]);
    await s.done(a);
  });

  it("a report older than the stored one (ignored): the next unchanged heartbeat stands for its list", async () => {
    const s = setup();
    const { a, beat } = await s.open("n1");
    await beat([vm("a", "n1")]);
    await beat([vm("d", "n1")], { tsMs: s.clock.now() - 10_000 });
    await s.shows("n1", ["a"]);
    s.clock.advance(1000);
    await beat("unchanged");
    await s.shows("n1", ["d"]);
    await s.done(a);
  });

  it("more placements than one report claims: unchanged heartbeats claim the rest", async () => {
    const s = setup();
    const { a, beat } = await s.open("n1");
    const many = Array.from({ length: 120 }, (_, i) => vm(`m-${String(i).padStart(3, "0")}`, "n1"));
    await beat(many);
    await eventually(async () => assert.equal((await s.shown("n1")).length, 50), {
      timeoutMs: 10_000,
    });
    for (let i = 0; i < 2; i++) {
      s.clock.advance(1000);
      await beat("unchanged");
    }
    await eventually(async () => assert.equal((await s.shown("n1")).length, 120), {
      timeoutMs: 10_000,
    });
    await s.done(a);
  });

  it("a VM placed on another node: an unchanged heartbeat claims it once that node no longer has it", async () => {
    const s = setup();
    const n2 = await s.open("n2");
    await n2.beat([vm("x", "n2")]);
    const n1 = await s.open("n1");
    await n1.beat([vm("x", "n1")]);
    await s.shows("n1", [], "a conflict: left out");
    s.clock.advance(1000);
    await n2.beat([]);
    s.clock.advance(1000);
    await n1.beat("unchanged");
    await s.shows("n1", ["x"]);
    assert.equal((await s.inventory.findVm("x"))?.nodeId?.id, "n1");
    await s.done(n1.a, n2.a);
  });
});
