/**
 * Holding a failover controller's pass mid-way, for tests of what happens
 * while its restarts are under way (another daemon taking the leadership, a
 * shutdown, the bound on restarts at once): recovers held where the
 * targets' hypervisors run them, and ticks until a pass has started one.
 */
import assert from "node:assert/strict";
import type { RecoveringDriver } from "../../src/drivers/index.js";
import type { ClusterHarness } from "./cluster-harness.js";
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
