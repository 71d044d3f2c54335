import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RpcError } from "../core/index.js";
import {
  createListWatch,
  type WatchChange,
  type WatchEntry,
  type WatchSynced,
  type WatchView,
} from "./list-watch.js";

interface Vm {
  id: string;
  tenant: string;
  state: string;
}

type Event = WatchChange<Vm> | WatchSynced;

/** A list the test changes by hand, watched every 10 ms. */
function world(initial: Vm[]) {
  let vms = initial;
  const watch = createListWatch<Vm>({
    intervalMs: 10,
    list: async () =>
      vms.map((vm): WatchEntry<Vm> => ({ key: vm.id, item: vm, tenants: [vm.tenant] })),
    digest: (vm) => JSON.stringify(vm),
    maxObjects: 5,
  });
  return {
    watch,
    set(next: Vm[]) {
      vms = next;
    },
  };
}

const tenantView =
  (tenant: string): WatchView<Vm> =>
  (e) =>
    e.tenants.includes(tenant) ? e.item : undefined;
const all: WatchView<Vm> = (e) => e.item;
const text = (e: Event) =>
  e.type === "synced" ? `synced${e.resumed ? " resumed" : ""}` : `${e.type} ${e.item.id}`;

/** Reads events until `until` says stop (or 200 of them), then ends the watch. */
async function read(stream: AsyncGenerator<Event>, until: (e: Event, seen: Event[]) => boolean) {
  // next() by hand: a for-await loop that breaks would end the generator.
  const seen: Event[] = [];
  for (;;) {
    const r = await stream.next();
    if (r.done) return seen;
    seen.push(r.value);
    if (until(r.value, seen) || seen.length >= 200) return seen;
  }
}

const vm = (id: string, tenant: string, state = "running"): Vm => ({ id, tenant, state });

describe("createListWatch", { timeout: 10_000 }, () => {
  it("sends the view's objects, then synced, then each change; deletions carry the last state seen", async () => {
    const w = world([vm("a", "acme"), vm("b", "globex")]);
    const stream = w.watch.watch(all, "", "", AbortSignal.timeout(5_000));
    const first = await read(stream, (e) => e.type === "synced");
    assert.deepEqual(first.map(text), ["added a", "added b", "synced"]);
    w.set([vm("a", "acme", "stopped")]);
    const next = await read(stream, (e) => e.type === "synced");
    assert.deepEqual(next.map(text), ["modified a", "deleted b", "synced resumed"]);
    assert.equal((next[1] as WatchChange<Vm>).item.tenant, "globex");
    await stream.return(undefined);
  });

  it("never tells a tenant about another tenant's objects, including their deletion", async () => {
    const w = world([vm("a", "acme"), vm("b", "globex")]);
    const stream = w.watch.watch(tenantView("acme"), "", "", AbortSignal.timeout(5_000));
    const seen = await read(stream, (e) => e.type === "synced");
    // b changes and goes; a moves to globex: acme sees only a leaving its view.
    w.set([vm("a", "acme"), vm("b", "globex", "stopped")]);
    await new Promise((r) => setTimeout(r, 30));
    w.set([vm("a", "globex")]);
    seen.push(...(await read(stream, (e) => e.type === "synced")));
    assert.deepEqual(seen.map(text), ["added a", "synced", "deleted a", "synced resumed"]);
    await stream.return(undefined);
  });

  it("resumes from a revision with only the changes since, through the watcher's view", async () => {
    const w = world([vm("a", "acme"), vm("b", "globex")]);
    const first = w.watch.watch(tenantView("acme"), "", "", AbortSignal.timeout(5_000));
    const synced = (await read(first, (e) => e.type === "synced")).at(-1) as WatchSynced;
    await first.return(undefined);
    w.set([vm("a", "acme", "stopped"), vm("b", "globex", "stopped"), vm("c", "globex")]);
    // Past the interval, so the resumed watch lists again instead of sharing the last listing.
    await new Promise((r) => setTimeout(r, 20));
    const again = w.watch.watch(
      tenantView("acme"),
      synced.revision,
      "",
      AbortSignal.timeout(5_000),
    );
    const seen = await read(again, (e) => e.type === "synced");
    assert.deepEqual(seen.map(text), ["modified a", "synced resumed"]);
    await again.return(undefined);
  });

  it("does not resume a watcher whose view changed: the whole list again, and what it lost goes", async () => {
    const w = world([vm("a", "acme"), vm("b", "globex")]);
    const first = w.watch.watch(all, "", "view-1", AbortSignal.timeout(5_000));
    const synced = (await read(first, (e) => e.type === "synced")).at(-1) as WatchSynced;
    await first.return(undefined);
    assert.match(synced.revision, /-view-1$/);
    // The caller lost globex: its view (and so its key) changed.
    const again = w.watch.watch(
      tenantView("acme"),
      synced.revision,
      "view-2",
      AbortSignal.timeout(5_000),
    );
    const seen = await read(again, (e) => e.type === "synced");
    assert.deepEqual(seen.map(text), ["added a", "synced"]);
    await again.return(undefined);
  });

  it("sends the whole view again for a revision it does not hold", async () => {
    const w = world([vm("a", "acme")]);
    const stream = w.watch.watch(all, "0a1b2c3d-7", "", AbortSignal.timeout(5_000));
    const seen = await read(stream, (e) => e.type === "synced");
    assert.deepEqual(seen.map(text), ["added a", "synced"]);
    await stream.return(undefined);
  });

  it("ends a view larger than its bound with WATCH_TOO_LARGE", async () => {
    const w = world(["a", "b", "c", "d", "e", "f"].map((id) => vm(id, "acme")));
    await assert.rejects(
      read(w.watch.watch(all, "", "", AbortSignal.timeout(5_000)), () => false),
      (err: unknown) => err instanceof RpcError && err.reason === "WATCH_TOO_LARGE",
    );
  });

  it("coalesces changes a slow reader missed into the latest state of each object", async () => {
    const w = world([vm("a", "acme")]);
    const stream = w.watch.watch(all, "", "", AbortSignal.timeout(5_000));
    await read(stream, (e) => e.type === "synced");
    for (const state of ["stopped", "paused", "crashed", "running", "stopped"]) {
      w.set([vm("a", "acme", state)]);
      await new Promise((r) => setTimeout(r, 15));
    }
    const seen = await read(stream, (e) => e.type === "synced");
    assert.deepEqual(seen.map(text), ["modified a", "synced resumed"]);
    assert.equal((seen[0] as WatchChange<Vm>).item.state, "stopped");
    await stream.return(undefined);
  });

  it("ends quietly when its signal aborts", async () => {
    const w = world([vm("a", "acme")]);
    const stop = new AbortController();
    const stream = w.watch.watch(all, "", "", stop.signal);
    await read(stream, (e) => e.type === "synced");
    stop.abort();
    assert.deepEqual(await stream.next(), { done: true, value: undefined });
  });
});
