/**
 * Holding a failover controller's pass mid-way, for tests of what happens
 * while its restarts are under way (another daemon taking the leadership, a
 * shutdown, the bound on restarts at once): recovers held where the
 * targets' hypervisors run them, and ticks until a pass has started one.
 */
import assert from "node:assert/strict";
import type { RecoveringDriver } from "../../src/drivers/index.js";
import { type VmInfo, VmState } from "../../src/gen/debvisor/v1/vm_pb.js";
import { type ClusterHarness, HARNESS_FENCE_MS } from "./cluster-harness.js";
import { within } from "./eventually.js";

/**
 * The recovers the targets' hypervisors were asked for, counted where they
 * happen: each is held while `hold(vmId)` says so, until `releaseAll()` or
 * the pass's signal.
 */
export function heldRecovers(hold: (vmId: string) => boolean) {
  let inFlight = 0;
  let most = 0;
  const started: string[] = [];
  const done: string[] = [];
  const waiting = new Set<() => void>();
  let released = false;
  return {
    started,
    done,
    most: () => most,
    inFlight: () => inFlight,
    releaseAll() {
      released = true;
      for (const wake of waiting) wake();
    },
    wrap: (d: RecoveringDriver): RecoveringDriver => ({
      ...d,
      async recover(vmId, from, signal, options) {
        inFlight++;
        most = Math.max(most, inFlight);
        started.push(vmId);
        try {
          if (hold(vmId) && !released) {
            // A target that takes its time (longer than the test's bounds below).
            await new Promise<void>((resolve) => {
              const wake = () => {
                waiting.delete(wake);
                resolve();
              };
              waiting.add(wake);
              signal.addEventListener("abort", wake, { once: true });
            });
          }
          await d.recover(vmId, from, signal, options);
          done.push(vmId);
        } finally {
          inFlight--;
        }
      },
    }),
  };
}

/**
 * Ticks `h`'s controller, advancing its clock 500 ms and heartbeating the
 * nodes up before each, until a pass starts something `started` sees (held
 * by the test's driver) within `waitMs` of real time; resolves with that
 * pass still running (wrapped: an async function's result would wait for
 * it), or undefined after `forMs` of the harness's clock.
 */
export async function passUnderWay(
  h: ClusterHarness,
  started: () => boolean,
  forMs: number,
  waitMs: number,
): Promise<{ pass: Promise<void> } | undefined> {
  const controller = h.runtime.controller;
  assert.ok(controller, "the harness runs a failover controller");
  for (let t = 0; t < forMs; t += 500) {
    h.clock.advance(500);
    await h.beat();
    const pass = controller.tick();
    let finished = false;
    void pass.then(() => {
      finished = true;
    });
    await within(waitMs, () => finished || started());
    if (started()) return { pass };
    await pass;
  }
  return undefined;
}

/**
 * The HA restore's starts, held where the hypervisors run them until
 * `release()` or their signal (a shutdown cutting them short), then failed
 * with `failure()`; once released, starts go through. `held` lists the VMs
 * whose starts were held.
 */
export function heldStarts(failure: () => Error) {
  const held: string[] = [];
  let holding = true;
  const waiting = new Set<() => void>();
  return {
    held,
    release() {
      holding = false;
      for (const wake of waiting) wake();
    },
    wrap: (d: RecoveringDriver): RecoveringDriver => ({
      ...d,
      async start(vmId, signal, options) {
        if (!holding) return d.start(vmId, signal, options);
        held.push(vmId);
        await new Promise<void>((resolve) => {
          waiting.add(resolve);
          if (signal.aborted) resolve();
          signal.addEventListener("abort", () => resolve(), { once: true });
        });
        throw failure();
      },
    }),
  };
}

/**
 * Two daemons' harnesses on one cluster, `a` leading: `node` is cut off past
 * its self-fence and back before the fence delay (its HA VMs noted lost and
 * stopped), and `a`'s pass is starting them again, held by the test's driver
 * (`held` says when). Resolves with those VMs and the pass still running.
 */
export async function restoreUnderWay(
  a: ClusterHarness,
  b: ClusterHarness,
  node: string,
  held: () => boolean,
): Promise<{ ha: VmInfo[]; pass: Promise<void> }> {
  const ca = a.runtime.controller;
  assert.ok(ca && b.runtime.controller);
  await ca.tick();
  assert.ok(ca.isLeader());
  const ha = ((await a.inventory.getNode(node))?.vms ?? []).filter(
    (vm) => vm.ha && vm.state === VmState.RUNNING,
  );
  assert.ok(ha.length > 0);
  a.sim.faults.partitionNode(node);
  for (let t = 0; t < HARNESS_FENCE_MS + 1000; t += 500) {
    a.clock.advance(500);
    await a.beat();
    await ca.tick();
  }
  for (const vm of ha) assert.equal(a.sim.locate(vm.id)?.state, "stopped", "it fenced itself");
  a.sim.faults.healNode(node);
  const pass = (await passUnderWay(a, held, 6000, 2000))?.pass;
  assert.ok(pass, "a's pass started an HA vm again");
  return { ha, pass };
}
