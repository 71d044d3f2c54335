import assert from "node:assert/strict";
import type { ServiceClient } from "../../src/client/index.js";
import type { VmService } from "../../src/gen/debvisor/v1/vm_pb.js";
import { type VmEvent, WatchEventType } from "../../src/gen/debvisor/v1/watch_pb.js";
import { eventually } from "./eventually.js";

/** What a followed stream has delivered so far, and how it ended ("completed", or `code N: ...`). */
export interface Followed<T> {
  events: T[];
  ended: string | undefined;
}

/** Reads `stream` in the background. */
export function followStream<T>(stream: AsyncIterable<T>): {
  state: Followed<T>;
  done: Promise<void>;
} {
  const state: Followed<T> = { events: [], ended: undefined };
  const done = (async () => {
    try {
      for await (const e of stream) state.events.push(e);
      state.ended = "completed";
    } catch (err) {
      const e = err as { code?: number; details?: string; rawMessage?: string; message?: string };
      state.ended = `code ${e.code ?? "?"}: ${e.details ?? e.rawMessage ?? e.message ?? String(err)}`;
    }
  })();
  return { state, done };
}

/** Waits until a followed VM watch has sent its first SYNCED. */
export const vmWatchSynced = (state: { events: VmEvent[] }) =>
  eventually(() => assert.ok(state.events.some((e) => e.header?.type === WatchEventType.SYNCED)));

/**
 * Changes `vmId`'s label `label` as `vms` (a caller that may) to a new value,
 * and tells whether a followed VM watch delivered that change before it
 * ended (or within 15 s).
 */
export function changeSeenBy(vms: ServiceClient<typeof VmService>, vmId: string, label: string) {
  let n = 0;
  return async (state: Followed<VmEvent>) => {
    const value = `after-${++n}`;
    await vms.setVmLabels({ vmId, set: { [label]: value } });
    const delivered = () => state.events.some((e) => e.vm?.labels?.[label] === value);
    await eventually(() => delivered() || state.ended !== undefined, { timeoutMs: 15_000 });
    return { delivered: delivered(), ended: state.ended };
  };
}
