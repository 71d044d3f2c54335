import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { silentLogger } from "../core/index.js";
import { AgentPresenceRecordSchema } from "../gen/debvisor/store/v1/agent_presence_records_pb.js";
import { createSqliteStore, encodeMessage, type KvStore } from "../store/index.js";
import { AGENTS_PREFIX } from "./agent-presence.js";
import { watchPresence } from "./agent-presence-watch.js";

const put = (store: KvStore, node: string, serverId: string) =>
  store.put(
    AGENTS_PREFIX + node,
    encodeMessage(AgentPresenceRecordSchema, create(AgentPresenceRecordSchema, { serverId })),
  );

/** Waits for `done`, at most 10 s (the assertion after it says what did not happen). */
async function until(done: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!done() && Date.now() < deadline) await sleep(10);
}

describe("agent presence watch", () => {
  it("says when it resumed after a failure, since a connection made meanwhile is not shown", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-presence-watch-"));
    const real = createSqliteStore({ path: join(dir, "state.db"), logger: silentLogger });
    // The first watch fails at its first event: that write is lost to it.
    const store: KvStore = Object.create(real);
    let failNext = true;
    store.watch = (prefix, from, opts) => {
      const inner = real.watch(prefix, from, opts);
      return (async function* () {
        for await (const e of inner) {
          if (failNext) {
            failNext = false;
            throw new Error("watch lost");
          }
          yield e;
        }
      })();
    };
    const stop = new AbortController();
    const shown: string[] = [];
    let started = 0;
    try {
      watchPresence({
        store,
        signal: stop.signal,
        logger: silentLogger,
        wanted: () => true,
        onConnected: (node, record) => shown.push(`${node} ${record.serverId}`),
        onWatching: () => {
          started++;
        },
      });
      // The write must come after the watch took its start revision (onWatching says so).
      await until(() => started >= 1);
      await put(real, "node-a", "replica-2");
      // The failed watch resumes after a 1 s pause: a loaded machine may take a few more.
      await until(() => started >= 2);
      assert.equal(started, 2, "the watch says when it starts and when it resumes");
      assert.deepEqual(shown, [], "the write made as the watch failed is not shown");
      await put(real, "node-a", "replica-3");
      await until(() => shown.length > 0);
      assert.deepEqual(shown, ["node-a replica-3"]);
    } finally {
      stop.abort();
      await real.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
