import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { PassThrough } from "node:stream";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { MigrationPhase, MigrationSchema } from "../gen/debvisor/v1/migration_pb.js";
import { migrationProgress } from "./migration-status.js";
import { createProgressRenderer, formatEta, watchInterrupts, watchProgress } from "./progress.js";

/** A stream that records what was written, and a clock the test moves. */
function fakes(columns = 80) {
  const writes: string[] = [];
  let t = 1_000_000;
  return {
    stream: { write: (s: string) => writes.push(s), columns },
    writes,
    now: () => t,
    advance: (ms: number) => {
      t += ms;
    },
  };
}

describe("createProgressRenderer, not on a terminal", () => {
  it("prints a plain line per 10% and per phase change, with rate and ETA", () => {
    const f = fakes();
    const p = createProgressRenderer({ stream: f.stream, tty: false, now: f.now, label: "m-1" });
    for (let pct = 0; pct <= 100; pct += 5) {
      p.update({ phase: "copying memory", percent: pct });
      f.advance(1000);
    }
    p.update({ phase: "switching over", percent: 100 });
    p.finish("done");
    assert.equal(f.writes.length, 11 + 1 + 1, "0%..100% in tens, the new phase, the end");
    assert.equal(f.writes[0], "m-1: copying memory 0%\n", "no rate before a second has passed");
    assert.equal(f.writes[5], "m-1: copying memory 50% (5.0%/s, ETA 10s)\n");
    assert.match(f.writes[11] ?? "", /^m-1: switching over 100%\n$/);
    assert.equal(f.writes[12], "m-1: done\n");
    assert.ok(
      f.writes.every((w) => !w.includes("\x1b") && !w.includes("\r")),
      "no escape codes",
    );
  });

  it("reports the rate in bytes when the update carries them", () => {
    const f = fakes();
    const p = createProgressRenderer({ stream: f.stream, tty: false, now: f.now });
    const total = 4 * 1024 ** 3;
    p.update({ phase: "copying disk", percent: 0, doneBytes: 0, totalBytes: total });
    f.advance(4000);
    p.update({ phase: "copying disk", percent: 25, doneBytes: total / 4, totalBytes: total });
    assert.equal(f.writes[1], "copying disk 25% (256 MiB/s, ETA 12s)\n");
  });
});

describe("migrationProgress", () => {
  it("keeps the rate and ETA while the downtime estimate changes", () => {
    const f = fakes(120);
    const p = createProgressRenderer({ stream: f.stream, tty: true, now: f.now });
    for (let i = 0; i <= 4; i++) {
      p.update(
        migrationProgress(
          create(MigrationSchema, {
            phase: MigrationPhase.TRANSFERRING,
            progressPct: i * 10,
            downtimeEstimateMs: 400 - i * 50,
          }),
        ),
      );
      f.advance(1000);
    }
    const line = f.writes.at(-1) ?? "";
    assert.match(line, / 40% {2}10\.0%\/s {2}ETA 6s {2}downtime ~200 ms$/, JSON.stringify(line));
  });
});

describe("createProgressRenderer, on a terminal", () => {
  it("redraws one line in place with a bar, percent, rate and ETA, at most every 100 ms", () => {
    const f = fakes();
    const p = createProgressRenderer({ stream: f.stream, tty: true, now: f.now });
    p.update({ phase: "copying memory", percent: 0 });
    f.advance(2000);
    p.update({ phase: "copying memory", percent: 40 });
    f.advance(10);
    p.update({ phase: "copying memory", percent: 41 });
    assert.equal(f.writes.length, 2, "the update 10 ms later waits for the next redraw");
    const line = f.writes[1] ?? "";
    assert.ok(line.startsWith("\r\x1b[2K"), "clears the line and redraws it");
    assert.match(line, /copying memory {2}\[#{10}-{14}\] {2} 40% {2}20\.0%\/s {2}ETA 3s$/);
    assert.ok(!line.includes("\n"));
    p.finish("migrated");
    assert.match(f.writes.at(-3) ?? "", /41%/, "finish draws the last pending state first");
    assert.equal(f.writes.at(-2), "\r\x1b[2K");
    assert.equal(f.writes.at(-1), "migrated\n");
  });

  it("fits the line to the terminal's width", () => {
    const f = fakes(30);
    const p = createProgressRenderer({ stream: f.stream, tty: true, now: f.now });
    p.update({ phase: "a rather long phase name that goes on", percent: 50 });
    assert.equal((f.writes[0] ?? "").replace("\r\x1b[2K", "").length, 29);
  });
});

describe("formatEta", () => {
  for (const [ms, text] of [
    [0, "0s"],
    [45_000, "45s"],
    [200_000, "3m20s"],
    [7_500_000, "2h05m"],
    [400 * 3_600_000, "400h"],
  ] as const)
    it(`shows ${ms} ms as ${text}`, () => assert.equal(formatEta(ms), text));
});

/** A keyboard that records raw mode. */
function keyboard() {
  const input = new PassThrough() as PassThrough & { setRawMode: (raw: boolean) => void };
  const raw: boolean[] = [];
  input.setRawMode = (r: boolean) => {
    raw.push(r);
  };
  return { input, raw };
}

describe("watchInterrupts", () => {
  it("not on a terminal: the first Ctrl-C stops watching, says how to resume, then lets go", () => {
    const signals = new EventEmitter();
    const out: string[] = [];
    let stopped = 0;
    let cancelled = 0;
    const w = watchInterrupts({
      signals,
      tty: false,
      write: (t) => out.push(t),
      stopWatching: () => stopped++,
      cancel: () => {
        cancelled++;
      },
      resumeHint: "hvctl migration watch m-1",
    });
    signals.emit("SIGINT");
    assert.equal(stopped, 1);
    assert.equal(cancelled, 0, "never cancels without asking");
    assert.equal(w.outcome(), "stopped");
    assert.deepEqual(out, [
      "stopped watching; the operation goes on; to watch it again: hvctl migration watch m-1\n",
    ]);
    assert.equal(signals.listenerCount("SIGINT"), 0, "a second Ctrl-C ends hvctl");
  });

  it("on a terminal: asks, and c cancels the operation while watching goes on", async () => {
    const signals = new EventEmitter();
    const { input, raw } = keyboard();
    const out: string[] = [];
    let cancelled = 0;
    let stopped = 0;
    let cleared = 0;
    const w = watchInterrupts({
      signals,
      tty: true,
      input,
      write: (t) => out.push(t),
      stopWatching: () => stopped++,
      cancel: async () => {
        cancelled++;
      },
      beforePrompt: () => cleared++,
    });
    signals.emit("SIGINT");
    assert.equal(out.join(""), "\ncancel the operation or just stop watching? [c/w] ");
    assert.equal(cleared, 1, "the progress bar is cleared before the question");
    signals.emit("SIGINT");
    assert.equal(out.length, 1, "a Ctrl-C while asking does not ask twice");
    input.write("c");
    await new Promise((r) => setImmediate(r));
    assert.equal(cancelled, 1);
    assert.equal(stopped, 0);
    assert.equal(w.outcome(), "cancelled");
    assert.deepEqual(raw, [true, false], "raw mode only while asking");
    assert.match(out.join(""), /c\ncancelling the operation\.\.\.\n$/);
    w.dispose();
    assert.equal(signals.listenerCount("SIGINT"), 0);
  });

  it("on a terminal: w stops watching; any other key keeps watching", async () => {
    const signals = new EventEmitter();
    const { input } = keyboard();
    const out: string[] = [];
    let stopped = 0;
    const w = watchInterrupts({
      signals,
      tty: true,
      input,
      write: (t) => out.push(t),
      stopWatching: () => stopped++,
      cancel: () => undefined,
      resumeHint: "hvctl migration watch m-1",
    });
    signals.emit("SIGINT");
    input.write("x");
    await new Promise((r) => setImmediate(r));
    assert.equal(stopped, 0);
    assert.equal(w.outcome(), "watching");
    assert.match(out.join(""), /still watching\n$/);
    signals.emit("SIGINT");
    input.write("w");
    await new Promise((r) => setImmediate(r));
    assert.equal(stopped, 1);
    assert.equal(w.outcome(), "stopped");
    assert.match(
      out.join(""),
      /stopped watching; the operation goes on; to watch it again: hvctl migration watch m-1\n$/,
    );
  });

  it("keeps watching when the cancel fails, and says why", async () => {
    const signals = new EventEmitter();
    const { input } = keyboard();
    const out: string[] = [];
    const w = watchInterrupts({
      signals,
      tty: true,
      input,
      write: (t) => out.push(t),
      stopWatching: () => undefined,
      cancel: async () => {
        throw new Error("migration already committed");
      },
    });
    signals.emit("SIGINT");
    input.write("c");
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    assert.equal(w.outcome(), "watching");
    assert.match(out.join(""), /could not cancel: migration already committed; still watching\n$/);
    w.dispose();
  });

  it("puts the keyboard back when the operation ends while it asks", () => {
    const signals = new EventEmitter();
    const { input, raw } = keyboard();
    const w = watchInterrupts({
      signals,
      tty: true,
      input,
      write: () => undefined,
      stopWatching: () => undefined,
      cancel: () => undefined,
    });
    signals.emit("SIGINT");
    assert.equal(input.listenerCount("data"), 1);
    w.dispose();
    assert.deepEqual(raw, [true, false]);
    assert.equal(input.listenerCount("data"), 0, "nothing left to keep hvctl running");
    assert.equal(input.isPaused(), true);
  });

  it("on a terminal with nothing to cancel: Ctrl-C stops watching at once", () => {
    const signals = new EventEmitter();
    const { input } = keyboard();
    let stopped = 0;
    watchInterrupts({
      signals,
      tty: true,
      input,
      write: () => undefined,
      stopWatching: () => stopped++,
    });
    signals.emit("SIGINT");
    assert.equal(stopped, 1);
  });
});

describe("watchProgress", () => {
  /** States of a fake operation, one per tick, until the signal stops it. */
  async function* operation(signal: AbortSignal, states: number[], gate?: Promise<void>) {
    for (const pct of states) {
      if (signal.aborted) throw Object.assign(new Error("cancelled"), { code: 1 });
      if (pct === -1) await gate;
      else yield { phase: pct < 100 ? "copying" : "done", pct };
      await new Promise((r) => setImmediate(r));
    }
  }

  it("not on a terminal: prints progress lines and the summary on stderr", async () => {
    const err: string[] = [];
    const r = await watchProgress(
      { err: (t) => err.push(t), signals: new EventEmitter() },
      {
        label: "m-1",
        open: (signal) => operation(signal, [0, 30, 60, 100]),
        progress: (s) => ({ phase: s.phase, percent: s.pct }),
        summary: (last) => `finished at ${last?.pct}%`,
      },
    );
    assert.equal(r.last?.pct, 100);
    assert.equal(r.outcome, "watching");
    assert.deepEqual(err, [
      "m-1: copying 0%\n",
      "m-1: copying 30%\n",
      "m-1: copying 60%\n",
      "m-1: done 100%\n",
      "m-1: finished at 100%\n",
    ]);
  });

  it("stops at the first Ctrl-C when not on a terminal, without a summary or an error", async () => {
    const signals = new EventEmitter();
    const err: string[] = [];
    let release = () => {};
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const watching = watchProgress(
      { err: (t) => err.push(t), signals },
      {
        open: (signal) => operation(signal, [0, -1, 50, 100], gate),
        progress: (s) => ({ phase: s.phase, percent: s.pct }),
        resumeHint: "hvctl migration watch m-1",
        cancel: async () => undefined,
        summary: () => "finished",
      },
    );
    await new Promise((r) => setTimeout(r, 20));
    signals.emit("SIGINT");
    release();
    const r = await watching;
    assert.equal(r.outcome, "stopped");
    assert.equal(r.last?.pct, 0);
    assert.equal(
      err.at(-1),
      "stopped watching; the operation goes on; to watch it again: hvctl migration watch m-1\n",
    );
    assert.ok(!err.includes("finished\n"));
    assert.equal(signals.listenerCount("SIGINT"), 0);
  });
});
