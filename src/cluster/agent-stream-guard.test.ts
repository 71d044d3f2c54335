import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { silentLogger } from "../core/index.js";
import { AgentPresenceRecordSchema } from "../gen/debvisor/store/v1/agent_presence_records_pb.js";
import { createSqliteStore, type KvStore } from "../store/index.js";
import { type AgentPresence, createAgentPresence } from "./agent-presence.js";
import { type GuardedStream, guardStreams } from "./agent-stream-guard.js";

/** A guard on a real SQLite store, counting its presence reads; `gate` holds the watch's start. */
function setUp(gate?: Promise<void>) {
  const dir = mkdtempSync(join(tmpdir(), "dv-stream-guard-"));
  const real = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
  const store: KvStore = Object.create(real);
  if (gate !== undefined)
    store.revision = async (opts) => {
      await gate;
      return real.revision(opts);
    };
  // What the guard's presence watch has done, so that the tests wait for it, not for a time:
  // it follows once it opened its watch (right after counting its start), and has handled an
  // event once it asks for the next one.
  let following = false;
  let handled = 0;
  store.watch = (prefix, from, opts) => {
    following = true;
    const inner = real.watch(prefix, from, opts);
    return (async function* () {
      for await (const e of inner) {
        yield e;
        handled = Math.max(handled, e.revision);
      }
    })();
  };
  const presence = createAgentPresence(real);
  let reads = 0;
  const counted: AgentPresence = {
    ...presence,
    current: (nodeId, signal) => {
      reads++;
      return presence.current(nodeId, signal);
    },
  };
  const held = new Map<string, GuardedStream>();
  const stop = new AbortController();
  const guard = guardStreams({
    store,
    presence: counted,
    serverId: "here",
    signal: stop.signal,
    logger: silentLogger,
    held: (nodeId) => held.get(nodeId),
    all: () => held.entries(),
  });
  const write = (serverId: string) =>
    presence.connected("node-a", create(AgentPresenceRecordSchema, { serverId }));
  const stream = (presenceRevision: number) => {
    const s = { presenceRevision, replacedBy: "", replace: (by: string) => (s.replacedBy = by) };
    return s;
  };
  return {
    guard,
    held,
    write,
    stream,
    reads: () => reads,
    /** Resolves once the guard's watch follows the store. */
    following: () => until("the presence watch follows", () => following),
    /** Resolves once the guard's watch has handled the write at `revision`. */
    shown: (revision: number) =>
      until(`the presence watch handled revision ${revision}`, () => handled >= revision),
    async close() {
      stop.abort();
      await real.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Waits (at most 10 s: a loaded machine is slow, a broken guard never gets there) for `done`. */
async function until(what: string, done: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!done() && Date.now() < deadline) await sleep(10);
  assert.ok(done(), what);
}

describe("guardStreams", () => {
  it("ends a stream whose node connected elsewhere while its Hello was in progress, without a read", async () => {
    const t = setUp();
    try {
      await t.following();
      const opening = t.guard.opening("node-a");
      const ours = await t.write("here");
      // The watch shows replica-2's write before the stream registers.
      await t.shown(await t.write("replica-2"));
      const s = t.stream(ours);
      t.held.set("node-a", s);
      opening.registered(s);
      assert.equal(s.replacedBy, "replica-2", "the stream ends: the node is replica-2's now");
      assert.equal(t.reads(), 0, "no presence read per stream");
    } finally {
      await t.close();
    }
  });

  it("keeps a stream whose Hello came after the other process's", async () => {
    const t = setUp();
    try {
      await t.following();
      const opening = t.guard.opening("node-a");
      await t.write("replica-2");
      const ours = await t.write("here");
      await t.shown(ours);
      const s = t.stream(ours);
      t.held.set("node-a", s);
      opening.registered(s);
      await sleep(50);
      assert.equal(s.replacedBy, "", "the later Hello holds the node");
      // A connection elsewhere after registration still ends it.
      await t.write("replica-3");
      await until("replaced by replica-3", () => s.replacedBy !== "");
      assert.equal(s.replacedBy, "replica-3");
    } finally {
      await t.close();
    }
  });

  it("reads the record of a stream that opened before the watch followed", async () => {
    let open = () => {};
    const t = setUp(new Promise((r) => (open = r)));
    try {
      const opening = t.guard.opening("node-a");
      const ours = await t.write("here");
      await t.write("replica-2"); // before the watch's first revision: it never shows it
      open();
      await t.following();
      const s = t.stream(ours);
      t.held.set("node-a", s);
      opening.registered(s);
      await until("replaced by replica-2", () => s.replacedBy !== "");
      assert.equal(s.replacedBy, "replica-2");
      assert.equal(t.reads(), 1);
    } finally {
      await t.close();
    }
  });
});
