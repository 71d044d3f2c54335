/**
 * The cluster metrics read from the inventory at scrape time: nodes by
 * readiness, each node's report clock skew, VMs by state and stale copies.
 */
import client from "prom-client";
import type { Inventory } from "../cluster/index.js";
import { NodeReadiness } from "../gen/debvisor/v1/node_pb.js";
import { VmState } from "../gen/debvisor/v1/vm_pb.js";
import { enumLabel as label } from "./enum-label.js";

/** Dependencies of {@link registerInventoryGauges}. */
export interface InventoryGaugesDeps {
  readonly registry: client.Registry;
  readonly inventory: Inventory;
  /** Aborted at shutdown: ends listings in progress. */
  readonly closing: AbortSignal;
}

/** Registers the inventory gauges (debvisor_nodes, _node_report_skew_seconds, _vms, _vm_conflicts) on the registry. */
export function registerInventoryGauges(deps: InventoryGaugesDeps): void {
  const { registry, inventory, closing } = deps;
  /**
   * One listing of the nodes, shared by the gauges of one scrape: prom-client
   * collects them all at once, and each listing costs tens of milliseconds
   * of event loop at 10,000 nodes.
   */
  let listing: ReturnType<Inventory["listNodes"]> | undefined;
  const nodes = () => {
    listing ??= inventory.listNodes(closing).finally(() => {
      listing = undefined;
    });
    return listing;
  };
  new client.Gauge({
    name: "debvisor_nodes",
    help: "Nodes known to the inventory, by readiness.",
    labelNames: ["readiness"] as const,
    registers: [registry],
    async collect() {
      const counts = new Map<string, number>([
        ["ready", 0],
        ["not_ready", 0],
      ]);
      for (const n of await nodes()) {
        const r = label(NodeReadiness, n.readiness);
        counts.set(r, (counts.get(r) ?? 0) + 1);
      }
      this.reset();
      for (const [readiness, n] of counts) this.set({ readiness }, n);
    },
  });
  new client.Gauge({
    name: "debvisor_node_report_skew_seconds",
    help: "How far each node's newest report's timestamp was ahead of the receiving server's clock (negative: behind). Shown, never trusted: readiness follows the node's lease.",
    labelNames: ["node"] as const,
    registers: [registry],
    async collect() {
      const listed = await nodes();
      this.reset();
      for (const n of listed)
        this.set({ node: n.info?.id?.id ?? "" }, Number(n.reportSkewMs) / 1000);
    },
  });
  new client.Gauge({
    name: "debvisor_vms",
    help: "VMs the nodes report, by state.",
    labelNames: ["state"] as const,
    registers: [registry],
    async collect() {
      const counts = new Map<string, number>();
      for (const s of [VmState.RUNNING, VmState.STOPPED, VmState.CRASHED])
        counts.set(label(VmState, s), 0);
      for (const [state, n] of await inventory.vmsByState(closing)) {
        const s = label(VmState, state);
        counts.set(s, (counts.get(s) ?? 0) + n);
      }
      this.reset();
      for (const [state, n] of counts) this.set({ state }, n);
    },
  });
  new client.Gauge({
    name: "debvisor_vm_conflicts",
    help: "Stale copies of VMs: copies reported by a node other than the one the VM is placed on (each is stopped and undefined once).",
    registers: [registry],
    async collect() {
      let n = 0;
      for (const rec of await inventory.conflicts(closing)) n += rec.staleCopies.length;
      this.set(n);
    },
  });
}
