import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { eventually } from "../../test/helpers/eventually.js";
import { createManualClock, silentLogger } from "../core/index.js";
import { NodeRecordSchema, VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { HealthSchema, NodeInfoSchema } from "../gen/debvisor/v1/node_pb.js";
import { VmState } from "../gen/debvisor/v1/vm_pb.js";
import { createSqliteStore, decodeMessage, encodeMessage, type KvStore } from "../store/index.js";
import { createInventory } from "./inventory.js";
import { type VersionedVm, withTenants } from "./vm-records.js";

/** A store whose vms/ watches can be broken on demand (a watch failure: the mirror reloads). */
function breakable(inner: KvStore) {
  const live = new Set<AbortController>();
  const store: KvStore = Object.create(inner);
  Object.assign(store, {
    backend: inner.backend,
    watch(prefix: string, from: number, opts: { signal: AbortSignal }) {
      if (prefix !== "vms/") return inner.watch(prefix, from, opts);
      const ac = new AbortController();
      live.add(ac);
      opts.signal.addEventListener("abort", () => ac.abort());
      const it = inner.watch(prefix, from, { signal: ac.signal });
      return (async function* () {
        try {
          for await (const e of it) yield e;
          if (!opts.signal.aborted) throw new Error("watch broken");
        } finally {
          live.delete(ac);
        }
      })();
    },
  });
  for (const k of [
    "get",
    "put",
    "delete",
    "range",
    "txn",
    "grantLease",
    "lease",
    "revision",
    "close",
  ] as const)
    (store as unknown as Record<string, unknown>)[k] = (
      inner[k] as (...a: unknown[]) => unknown
    ).bind(inner);
  return {
    store,
    breakWatch: () => {
      for (const ac of live) ac.abort();
    },
  };
}

let seed = 12345;
const rnd = (n: number) => {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff;
  return seed % n;
};

async function storeView(store: KvStore) {
  const vms = new Map<string, VersionedVm>();
  for (const kv of (await store.range("vms/")).kvs)
    vms.set(kv.key.slice(4), { rec: decodeMessage(VmRecordSchema, kv), rev: kv.modRevision });
  const nodes = new Map<string, ReturnType<typeof decodeMessage<typeof NodeRecordSchema>>>();
  for (const kv of (await store.range("nodes/")).kvs)
    nodes.set(kv.key.slice(6), decodeMessage(NodeRecordSchema, kv));
  return { vms, nodes };
}

const fact = (v: {
  tenant: string;
  labels: Record<string, string>;
  managed: boolean;
  desiredState: VmState;
}) => JSON.stringify([v.tenant, Object.entries(v.labels).sort(), v.managed, v.desiredState]);

/**
 * The node records listed are kept with their VMs' facts applied until one of
 * those VMs' records changes (faced-records.ts). Random sequences of reports
 * (several nodes reporting one VM), this process's own writes, other
 * processes' writes and deletes, watch failures (the mirror reloads) and
 * concurrent reads: every read must show what the store holds. Written by an
 * adversarial review of that cache; it fails when an unknown version is taken
 * for "unchanged", or the wrong id is looked at.
 */
describe("node records listed with their VMs' facts", () => {
  for (const run of [1, 2, 3]) {
    it(`random run ${run}: every read shows the facts the store holds`, {
      timeout: 120_000,
    }, async () => {
      seed = run * 7919;
      const raw = createSqliteStore({
        path: join(mkdtempSync(join(tmpdir(), "dv-adv-")), "s.db"),
        logger: silentLogger,
      });
      const { store, breakWatch } = breakable(raw);
      const inv = createInventory({ store, clock: createManualClock(1_000_000) });
      const NODES = 5;
      const ids = ["a", "b", "c", "d", "e", "f", "g", "__proto__", "x/y", "A", "a.b-c_d"];
      for (let n = 0; n < NODES; n++)
        await inv.register(create(NodeInfoSchema, { id: { id: `n${n}` } }), "o");
      let ts = 1;
      const check = async () => {
        const want = await storeView(raw);
        const nodes = await inv.listNodes();
        for (const node of nodes) {
          const id = node.info?.id?.id ?? "";
          const stored = want.nodes.get(id);
          const exp = withTenants(stored?.health?.vms ?? [], { get: (k) => want.vms.get(k) });
          const got = node.health?.vms ?? [];
          assert.deepEqual(got.map(fact), exp.map(fact), `listNodes ${id}`);
          const one = await inv.getNode(id);
          assert.deepEqual(one?.vms.map(fact), exp.map(fact), `getNode ${id}`);
        }
        for (const vm of await inv.listVms()) {
          const r = want.vms.get(vm.id)?.rec;
          assert.equal(vm.tenant, r?.tenant ?? "", `listVms ${vm.id}`);
          assert.equal((await inv.findVm(vm.id))?.tenant, r?.tenant ?? "", `findVm ${vm.id}`);
        }
      };
      for (let step = 0; step < 150; step++) {
        const op = rnd(10);
        const id = ids[rnd(ids.length)] ?? "a";
        try {
          if (op <= 1) {
            const n = rnd(NODES);
            const vms = ids
              .filter(() => rnd(3) === 0)
              .map((v) => ({ id: v, nodeId: { id: `n${n}` } }));
            await inv.heartbeat(
              create(HealthSchema, {
                nodeId: { id: `n${n}` },
                timestamp: { seconds: BigInt(ts++) },
                vms,
              }),
            );
          } else if (op === 2) await inv.assignTenant(id, `t${rnd(4)}`, "admin");
          else if (op === 3) await inv.setLabels(id, { k: `${rnd(3)}` }, rnd(2) ? ["k"] : []);
          else if (op === 4) {
            const prev = await raw.get(`vms/${id}`);
            const rec = prev ? decodeMessage(VmRecordSchema, prev) : create(VmRecordSchema, { id });
            await raw.put(
              `vms/${id}`,
              encodeMessage(
                VmRecordSchema,
                create(VmRecordSchema, {
                  ...rec,
                  tenant: `ext${rnd(4)}`,
                  managed: rnd(2) === 0,
                  desiredState: VmState.STOPPED,
                }),
              ),
            );
          } else if (op === 5) await raw.delete(`vms/${id}`);
          else if (op === 6 && rnd(4) === 0) breakWatch();
          else if (op === 7) {
            // concurrent reads with writes in flight
            await Promise.all([
              inv.listNodes(),
              inv.assignTenant(id, `c${rnd(3)}`, "admin").catch(() => {}),
              inv.findVm(id),
              inv.listVms(),
            ]);
          }
        } catch (e) {
          if (
            !(
              e instanceof Error &&
              /VM_NOT_FOUND|CONFLICT/.test(String((e as { reason?: string }).reason ?? e.message))
            )
          )
            throw e;
        }
        if (rnd(3) === 0) await eventually(check, { timeoutMs: 15_000 });
      }
      await eventually(check, { timeoutMs: 15_000 });
      inv.close();
      await raw.close();
    });
  }
});
