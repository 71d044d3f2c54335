import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setImmediate as tick } from "node:timers/promises";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import fc from "fast-check";
import { createRecencyMap } from "./recency-map.js";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;
const heapMb = () => {
  gc();
  gc();
  return process.memoryUsage().heapUsed / 1e6;
};

type Op =
  | { op: "touch"; key: number; value: number }
  | { op: "delete"; key: number }
  | { op: "get"; key: number }
  | { op: "oldest" }
  | { op: "dropOldest" };

const opsOver = (key: fc.Arbitrary<number>, maxLength: number) =>
  fc.array(
    fc.oneof(
      fc.record({ op: fc.constant("touch" as const), key, value: fc.integer() }),
      fc.record({ op: fc.constant("delete" as const), key }),
      fc.record({ op: fc.constant("get" as const), key }),
      fc.record({ op: fc.constant("oldest" as const) }),
      fc.record({ op: fc.constant("dropOldest" as const) }),
    ),
    { maxLength },
  );

describe("recency map", () => {
  it("answers as a plain Map re-inserted on every touch, whatever the sequence", () => {
    const few = opsOver(fc.integer({ min: 0, max: 7 }), 200);
    const many = opsOver(fc.integer({ min: 0, max: 3000 }), 5000);
    fc.assert(
      fc.property(fc.oneof(few, many), (sequence: Op[]) => {
        const model = new Map<number, number>();
        const map = createRecencyMap<number, number>();
        for (const step of sequence) {
          const first = model.entries().next();
          const modelOldest = first.done === true ? undefined : first.value;
          switch (step.op) {
            case "touch":
              model.delete(step.key);
              model.set(step.key, step.value);
              map.touch(step.key, step.value);
              break;
            case "delete":
              assert.equal(map.delete(step.key), model.delete(step.key));
              break;
            case "get":
              assert.equal(map.get(step.key), model.get(step.key));
              break;
            case "oldest":
              assert.deepEqual(map.oldest(), modelOldest);
              break;
            case "dropOldest":
              if (modelOldest !== undefined) model.delete(modelOldest[0]);
              map.dropOldest();
              break;
          }
          assert.equal(map.size, model.size);
        }
        assert.deepEqual(map.oldest(), model.entries().next().value);
      }),
      { numRuns: 300 },
    );
  });

  it("drains a full map oldest first, in touch order, after many evictions", () => {
    const map = createRecencyMap<string, number>();
    // The order a plain Map keeps when every touch deletes and re-inserts the key.
    const model = new Map<string, number>();
    const touch = (k: string, v: number) => {
      map.touch(k, v);
      model.delete(k);
      model.set(k, v);
    };
    for (let i = 0; i < 1000; i++) touch(`k${i}`, i);
    for (let i = 1000; i < 5000; i++) {
      map.dropOldest();
      model.delete(model.keys().next().value as string);
      touch(`k${i}`, i);
      // Touching the oldest moves it to the end; the next one is the oldest now.
      if (i % 7 === 0) {
        const first = map.oldest();
        assert.ok(first !== undefined);
        touch(first[0], first[1]);
      }
      // A key in the middle, touched again, goes last too.
      if (i % 11 === 0) touch(`k${i - 500}`, -i);
    }
    assert.equal(map.size, 1000);
    const seen: [string, number][] = [];
    for (let first = map.oldest(); first !== undefined; first = map.oldest()) {
      seen.push(first);
      map.dropOldest();
    }
    assert.deepEqual(seen, [...model.entries()]);
    assert.equal(map.oldest(), undefined);
    map.touch("again", 1);
    assert.deepEqual(map.oldest(), ["again", 1]);
  });

  it("drops its least recently touched entries past the bound it was made with", () => {
    const map = createRecencyMap<string, number>(3);
    for (const k of ["a", "b", "c"]) map.touch(k, 0);
    map.touch("a", 1); // a is the newest now: b goes first
    map.touch("d", 0);
    assert.equal(map.size, 3);
    assert.equal(map.get("b"), undefined, "the least recently touched went");
    assert.equal(map.get("a"), 1);
    map.touch("e", 0);
    assert.equal(map.get("c"), undefined);
    assert.deepEqual(map.oldest(), ["a", 1]);
  });

  // Calls come in batches on separate turns, as a server's do. An earlier version kept one
  // iterator open on its Map, which held every table V8 rebuilt until the oldest entry was
  // asked for: 76 MB more over these touches.
  it("keeps its heap bounded while entries are touched and the oldest is never asked for", async () => {
    const map = createRecencyMap<string, number>();
    for (let i = 0; i < 50; i++) map.touch(`k${i}`, i);
    const before = heapMb();
    for (let batch = 0; batch < 2000; batch++) {
      await tick();
      for (let j = 0; j < 250; j++) map.touch(`k${j % 50}`, j);
    }
    const grown = heapMb() - before;
    assert.equal(map.size, 50);
    assert.ok(grown < 10, `heap grew ${grown.toFixed(1)} MB over 500,000 touches of 50 keys`);
  });
});
