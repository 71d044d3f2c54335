import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { silentLogger } from "../core/index.js";
import type { KvStore } from "./kv-store.js";
import { mirrorPrefix } from "./prefix-mirror.js";
import { createSqliteStore } from "./sqlite-store.js";

const sqlite = () =>
  createSqliteStore({
    path: join(mkdtempSync(join(tmpdir(), "dv-mirror-")), "s.db"),
    logger: silentLogger,
  });

/**
 * The real store, with its watch's events held back until released: the
 * order of a write's answer and its watch event is otherwise the event loop's.
 */
function heldWatch(store: KvStore): { store: KvStore; release(): void } {
  let open = false;
  const waiting: (() => void)[] = [];
  const held: KvStore = Object.create(store);
  held.watch = async function* (prefix, from, opts) {
    for await (const e of store.watch(prefix, from, opts)) {
      if (!open) await new Promise<void>((r) => waiting.push(r));
      yield e;
    }
  };
  return {
    store: held,
    release() {
      open = true;
      for (const r of waiting.splice(0)) r();
    },
  };
}

/** Waits until `done` (a watch event taken), for at most 20 s: the assertions after it say what was not. */
const settle = async (done: () => boolean) => {
  const until = Date.now() + 20_000;
  while (!done() && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
};

interface Entry {
  readonly rev: number;
  readonly v: number;
}

describe("mirrorPrefix", () => {
  it("follows changes, and a removed listener is gone for good", async () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-mirror-")), "s.db"),
      logger: silentLogger,
    });
    await store.put("m/a", new Uint8Array([1]));
    const mirror = await mirrorPrefix(store, "m/", (kv) => kv.value[0], silentLogger);
    assert.deepEqual([...mirror.values()], [["a", 1]]);
    let calls = 0;
    const stop = mirror.onChange(() => calls++);
    await store.put("m/b", new Uint8Array([2]));
    await settle(() => calls > 0);
    assert.equal(calls, 1);
    assert.equal(mirror.values().get("b"), 2);
    stop();
    await store.put("m/c", new Uint8Array([3]));
    await settle(() => mirror.values().has("c"));
    assert.equal(mirror.values().get("c"), 3);
    assert.equal(calls, 1, "not called after unsubscribing");
    mirror.close();
    await store.close();
  });

  it("shows an own write at once, and takes its watch event without decoding it again", async () => {
    const base = sqlite();
    const { store, release } = heldWatch(base);
    let decoded = 0;
    const mirror = await mirrorPrefix<Entry>(
      store,
      "m/",
      (kv) => {
        decoded++;
        return { rev: kv.modRevision, v: kv.value[0] ?? 0 };
      },
      silentLogger,
      { revisionOf: (e) => e.rev },
    );
    const changes: (string | undefined)[] = [];
    mirror.onChange((k) => changes.push(k));
    const rev = await base.put("m/a", new Uint8Array([7]));
    const mine = { rev, v: 7 };
    mirror.wrote("a", rev, mine);
    assert.equal(mirror.values().get("a"), mine, "shown before the watch brings it");
    assert.deepEqual(changes, ["a"]);
    release();
    await base.put("m/z", new Uint8Array([1]));
    await settle(() => mirror.values().has("z"));
    assert.equal(mirror.values().get("a"), mine, "the watch's event did not replace it");
    assert.equal(decoded, 1, "only z was decoded");
    assert.deepEqual(changes, ["a", "z"]);
    mirror.close();
    await base.close();
  });

  it("keeps the caller's copy of a write the watch brought first", async () => {
    const base = sqlite();
    const mirror = await mirrorPrefix<Entry>(
      base,
      "m/",
      (kv) => ({ rev: kv.modRevision, v: kv.value[0] ?? 0 }),
      silentLogger,
      { revisionOf: (e) => e.rev },
    );
    const rev = await base.put("m/a", new Uint8Array([7]));
    await settle(() => mirror.values().has("a"));
    const decodedCopy = mirror.values().get("a");
    assert.equal(decodedCopy?.rev, rev);
    const mine = { rev, v: 7 };
    mirror.wrote("a", rev, mine);
    assert.equal(mirror.values().get("a"), mine, "one copy: the caller's");
    // An older write noted late stands over nothing.
    mirror.wrote("a", rev - 1, { rev: rev - 1, v: 6 });
    assert.equal(mirror.values().get("a"), mine);
    mirror.close();
    await base.close();
  });

  it("hides an own delete at once; older writes and events never bring the key back", async () => {
    const base = sqlite();
    const { store, release } = heldWatch(base);
    const mirror = await mirrorPrefix<Entry>(
      store,
      "m/",
      (kv) => ({ rev: kv.modRevision, v: kv.value[0] ?? 0 }),
      silentLogger,
      { revisionOf: (e) => e.rev },
    );
    const first = await base.put("m/a", new Uint8Array([1]));
    const gone = await base.delete("m/a");
    mirror.wrote("a", gone.revision, undefined);
    assert.equal(mirror.values().has("a"), false);
    // A write that finished before the delete, noted after it.
    mirror.wrote("a", first, { rev: first, v: 1 });
    assert.equal(mirror.values().has("a"), false, "an older write does not undo the delete");
    release();
    const later = await base.put("m/a", new Uint8Array([2]));
    await settle(() => mirror.values().get("a")?.rev === later);
    assert.equal(mirror.values().get("a")?.v, 2, "a later write by anyone shows");
    mirror.close();
    await base.close();
  });
});
