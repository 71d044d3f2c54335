import type { Logger } from "../core/index.js";
import { NodeReadiness, type NodeSummary } from "../gen/debvisor/v1/node_pb.js";
import type { KvStore } from "../store/index.js";
import type { EventSink } from "./event-recorder.js";
import type { Inventory } from "./inventory.js";

/** The last readiness told per node: a key each, taken by compare-and-swap. */
const MARKS = "events/marks/readiness/";

type Seen = "ready" | "not-ready" | "fenced";

/** Options of {@link startReadinessEvents}. */
export interface ReadinessEventsOptions {
  readonly store: KvStore;
  readonly inventory: Inventory;
  readonly events: EventSink;
  readonly logger: Logger;
  /** NOT_READY for longer than this: the node has fenced itself (its VMs are stopped). */
  readonly fenceDelayMs: number;
  /** How often nodes are looked at (default 2000 ms). */
  readonly intervalMs?: number;
}

/** The loop that tells node readiness transitions. */
export interface ReadinessEvents {
  /** One look at every node (the timer calls it; tests call it directly). */
  tick(): Promise<void>;
  close(): void;
}

/**
 * Tells a node going ready, not ready and fenced (and each of its VMs
 * fenced) exactly once across every daemon sharing the store. Readiness is
 * computed on read, so there is no write to hang the event on: each daemon
 * looks every interval, and the one whose compare-and-swap moves the node's
 * mark (`events/marks/readiness/<node>`) from the old state to the new tells
 * it; the others find the mark already moved. Store reads happen only when
 * this process sees a change.
 */
export function startReadinessEvents(options: ReadinessEventsOptions): ReadinessEvents {
  const { store, inventory, events, logger, fenceDelayMs } = options;
  const known = new Map<string, Seen>();
  const stop = new AbortController();
  let busy = false;

  const seenOf = (n: NodeSummary): Seen =>
    n.readiness === NodeReadiness.READY
      ? "ready"
      : Number(n.notReadyForMs) > fenceDelayMs
        ? "fenced"
        : "not-ready";

  function tell(n: NodeSummary, before: Seen | undefined, now: Seen) {
    const id = n.info?.id?.id ?? "";
    const node = { kind: "node" as const, id, tenant: "", source: "readiness" };
    const age = Math.round(Number(n.heartbeatAgeMs) / 1000);
    if (now === "ready") {
      events.emit({
        ...node,
        type: "Ready",
        message: before === undefined ? `${id} is ready` : `${id} is ready again (was ${before})`,
      });
      return;
    }
    if (before === "ready" || before === undefined || now === "not-ready")
      events.emit({
        ...node,
        type: "NotReady",
        warning: true,
        message: `${id} is not ready: no heartbeat for ${age} s`,
      });
    if (now !== "fenced") return;
    events.emit({
      ...node,
      type: "Fenced",
      warning: true,
      message: `${id} has been not ready for ${Math.round(Number(n.notReadyForMs) / 1000)} s, past the fence delay (${Math.round(fenceDelayMs / 1000)} s): its watchdog has stopped its vms`,
    });
    for (const vm of n.health?.vms ?? [])
      events.emit({
        kind: "vm",
        id: vm.id,
        tenant: vm.tenant,
        type: "Fenced",
        warning: true,
        message: `stopped by ${id}'s watchdog: ${id} has been not ready past the fence delay`,
        source: "readiness",
      });
  }

  async function look(n: NodeSummary, signal: AbortSignal) {
    const id = n.info?.id?.id ?? "";
    const now = seenOf(n);
    if (known.get(id) === now) return;
    const key = MARKS + id.toLowerCase();
    const mark = await store.get(key, { signal });
    const before = mark === undefined ? undefined : (new TextDecoder().decode(mark.value) as Seen);
    if (before === now) {
      known.set(id, now);
      return;
    }
    const txn = await store.txn(
      {
        compares: [{ key, modRevision: mark?.modRevision ?? 0 }],
        success: [{ type: "put", key, value: new TextEncoder().encode(now) }],
      },
      { signal },
    );
    // Lost the race: another daemon told it; read the mark again next time.
    if (!txn.succeeded) return;
    known.set(id, now);
    tell(n, before, now);
  }

  async function tick() {
    if (busy || stop.signal.aborted) return;
    busy = true;
    try {
      for (const n of await inventory.listNodes(stop.signal)) await look(n, stop.signal);
    } catch (err) {
      if (!stop.signal.aborted) logger.warn({ err }, "node readiness events: pass failed");
    } finally {
      busy = false;
    }
  }

  const timer = setInterval(() => void tick(), options.intervalMs ?? 2000);
  timer.unref();
  return {
    tick,
    close() {
      clearInterval(timer);
      stop.abort();
    },
  };
}
