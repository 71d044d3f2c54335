import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { IEvent } from "etcd3";
import type { WatchEvent } from "./kv-store.js";
import { createWatchQueue, MAX_WATCH_BACKLOG } from "./watch-queue.js";

const event = (key: string, rev: number) =>
  ({ type: "Put", kv: { key: Buffer.from(key), mod_revision: String(rev) } }) as unknown as IEvent;
const convert = (ev: IEvent): WatchEvent => ({
  type: "put",
  key: ev.kv.key.toString(),
  value: new Uint8Array(0),
  revision: Number(ev.kv.mod_revision),
});
const drain = (q: ReturnType<typeof createWatchQueue>) => {
  const keys: string[] = [];
  for (let ev = q.take(); ev !== undefined; ev = q.take()) keys.push(`${ev.key}@${ev.revision}`);
  return keys;
};

describe("a watch's queue", () => {
  it("resumes inside a transaction's revision without losing or repeating its keys", () => {
    const q = createWatchQueue(5, convert);
    assert.equal(q.resumeFrom(), 5);
    // The first stream brings only the first of two keys written at revision 5.
    assert.ok(q.accept([event("a", 5)]));
    assert.equal(q.resumeFrom(), 5, "the rest of revision 5 may still come");
    q.restart();
    // The next stream replays revision 5 whole, then goes on.
    assert.ok(q.accept([event("a", 5), event("b", 5), event("c", 6)]));
    assert.equal(q.resumeFrom(), 6);
    assert.deepEqual(drain(q), ["a@5", "b@5", "c@6"]);
  });

  it("resumes after the revision etcd's progress vouched for, and never goes back", () => {
    const q = createWatchQueue(5, convert);
    assert.ok(q.accept([event("a", 5)]));
    q.progressed(40);
    assert.equal(
      q.resumeFrom(),
      41,
      "nothing for this watch up to 40: the next stream starts at 41",
    );
    q.progressed(30);
    assert.equal(q.resumeFrom(), 41);
    q.restart();
    assert.ok(q.accept([event("b", 41)]));
    assert.deepEqual(drain(q), ["a@5", "b@41"]);
  });

  it("says when more events wait than the backlog allows", () => {
    const q = createWatchQueue(1, convert);
    const many = Array.from({ length: MAX_WATCH_BACKLOG }, (_, i) => event(`k${i}`, i + 1));
    assert.ok(q.accept(many), "exactly the backlog fits");
    assert.equal(q.accept([event("one-more", MAX_WATCH_BACKLOG + 1)]), false);
    q.take();
    assert.ok(q.accept([]), "one taken: back within it");
  });
});
