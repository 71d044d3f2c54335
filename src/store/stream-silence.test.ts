import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setImmediate as immediate } from "node:timers/promises";
import { createStreamSilence } from "./stream-silence.js";

function silenceAt(clock: { t: number }) {
  const told: string[] = [];
  const s = createStreamSilence({
    quietMs: 3000,
    silentMs: 5000,
    ask: () => told.push(`ask@${clock.t}`),
    silent: () => told.push(`silent@${clock.t}`),
    now: () => clock.t,
  });
  return { s, told };
}

describe("stream silence", () => {
  it("asks a stream quiet for 3 s once, and gives up on it 5 s after the next check if it still said nothing", async () => {
    const clock = { t: 0 };
    const { s, told } = silenceAt(clock);
    for (clock.t = 0; clock.t <= 11_000; clock.t += 1000) {
      s.check();
      await immediate();
    }
    assert.deepEqual(told, ["ask@3000", "silent@9000"]);
  });

  it("does not hold a question that went out late (its turn blocked) against the stream", async () => {
    const clock = { t: 0 };
    const { s, told } = silenceAt(clock);
    clock.t = 3000;
    s.check();
    // The turn that asked blocked for 6 s: the question left only now.
    clock.t = 9000;
    s.check();
    await immediate();
    assert.deepEqual(told, ["ask@3000"]);
    clock.t = 9050;
    s.heard();
    clock.t = 20_000;
    s.check();
    assert.deepEqual(told, ["ask@3000", "ask@20000"]);
  });

  it("takes any word as an answer, even one read in the same turn as the late check", async () => {
    const clock = { t: 0 };
    const { s, told } = silenceAt(clock);
    clock.t = 3000;
    s.check();
    clock.t = 4000;
    s.check();
    clock.t = 9500;
    s.check();
    // The answer was waiting in the socket while the process was busy: read before the verdict.
    s.heard();
    await immediate();
    assert.deepEqual(told, ["ask@3000"]);
    clock.t = 12_000;
    s.check();
    assert.deepEqual(told, ["ask@3000"], "quiet again only 2.5 s");
    clock.t = 12_500;
    s.check();
    assert.deepEqual(told, ["ask@3000", "ask@12500"]);
  });
});
