import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { type VmInfo, VmInfoSchema } from "../gen/debvisor/v1/vm_pb.js";
import { type VmEvent, VmEventSchema, WatchEventType } from "../gen/debvisor/v1/watch_pb.js";
import { createCliContext } from "./cli-context.js";
import { CallError } from "./cli-errors.js";
import { type Column, messageJson } from "./output.js";
import { watchList } from "./watch-list.js";

const COLUMNS: Column<VmInfo>[] = [
  { header: "ID", value: (v) => v.id },
  { header: "STATE", value: (v) => v.name },
  { header: "AGE", value: (v) => v.cpuModel, volatile: true },
];
const vm = (id: string, state: string, age = "1s") =>
  create(VmInfoSchema, { id, name: state, cpuModel: age });
const ev = (type: WatchEventType, item?: VmInfo, revision = "", resumed = false): VmEvent =>
  create(VmEventSchema, { header: { type, revision, resumed }, vm: item });
const { ADDED, MODIFIED, SYNCED } = WatchEventType;

/**
 * Runs `hvctl ... --watch` output over two connections: the first sends
 * `first` and breaks (UNAVAILABLE, so hvctl opens the watch again from the
 * last revision), the second sends `second` and is refused (the end).
 */
async function run(
  tty: boolean,
  format: "table" | "json",
  ...streams: VmEvent[][]
): Promise<{ out: string; err: string; since: string[] }> {
  return runEnding(undefined, tty, format, ...streams);
}

/** {@link run}, the watch ending with the code `ends` (default: the last stream's refusal). */
async function runEnding(
  ends: grpc.status | undefined,
  tty: boolean,
  format: "table" | "json",
  ...streams: VmEvent[][]
) {
  return runBreaking(undefined, ends, tty, format, ...streams);
}

/** {@link runEnding}, each break carrying `breaks` as its trailers (a reason, say). */
async function runBreaking(
  breaks: grpc.Metadata | undefined,
  ends: grpc.status | undefined,
  tty: boolean,
  format: "table" | "json",
  ...streams: VmEvent[][]
) {
  let out = "";
  let err = "";
  const ctx = createCliContext(
    { output: format },
    {
      out: (t) => {
        out += t;
      },
      err: (t) => {
        err += t;
      },
      env: { NO_COLOR: "1" },
      tty: { stdout: tty },
    },
  );
  const since: string[] = [];
  await assert.rejects(
    watchList(ctx, {
      columns: COLUMNS,
      key: (v) => v.id,
      sortBy: "id",
      name: "vm",
      json: (v) => messageJson(VmInfoSchema, v),
      item: (e: VmEvent) => e.vm,
      reconnect: { firstMs: 1, maxMs: 20 },
      open: (_watch, from) => {
        since.push(from.sinceRevision);
        const events = streams.shift() ?? [];
        const last = streams.length === 0;
        return (async function* (): AsyncGenerator<VmEvent> {
          yield* events;
          throw new CallError("watch", {
            code: last ? grpc.status.PERMISSION_DENIED : grpc.status.UNAVAILABLE,
            details: last
              ? "done"
              : events.length === 0
                ? "No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:7443. Resolution note: "
                : "connection reset",
            metadata: last ? undefined : breaks,
          });
        })();
      },
    }),
    (e: unknown) => e instanceof CallError && e.code === (ends ?? grpc.status.PERMISSION_DENIED),
  );
  return { out, err, since };
}

const FIRST = [
  ev(ADDED, vm("vm-2", "Running")),
  ev(ADDED, vm("vm-1", "Running")),
  ev(SYNCED, undefined, "e1-1"),
  ev(MODIFIED, vm("vm-1", "Running", "9s")),
  ev(MODIFIED, vm("vm-2", "Unknown")),
  ev(SYNCED, undefined, "e1-2", true),
];
// The server no longer held e1-2: the whole list again, without vm-1.
const SECOND = [ev(ADDED, vm("vm-2", "Stopped")), ev(SYNCED, undefined, "e2-1", false)];

describe("watchList", () => {
  it("in a pipe: one table with EVENT, then a line per change; ages alone print nothing", async () => {
    const { out, err, since } = await run(false, "table", FIRST, SECOND);
    assert.deepEqual(out.split("\n"), [
      "EVENT      ID     STATE     AGE",
      "ADDED      vm-1   Running   1s",
      "ADDED      vm-2   Running   1s",
      "MODIFIED   vm-2   Unknown   1s",
      // After the break: vm-2 changed, and vm-1 is gone from the list sent again.
      "ADDED      vm-2   Stopped   1s",
      "DELETED    vm-1   Running   9s",
      "",
    ]);
    assert.deepEqual(since, ["", "e1-2"]);
    assert.match(err, /the watch broke \(connection reset\); watching again from revision e1-2/);
  });

  it("on a terminal: the whole table redrawn after each batch", async () => {
    const { out } = await run(true, "table", FIRST, SECOND);
    const frames = out.split("\x1b[H\x1b[2J").slice(1);
    assert.equal(frames.length, 3);
    assert.equal(frames[1], "ID     STATE     AGE\nvm-1   Running   9s\nvm-2   Unknown   1s\n");
    assert.equal(frames[2], "ID     STATE     AGE\nvm-2   Stopped   1s\n");
  });

  it("with -o json: a JSON line per change", async () => {
    const { out } = await run(false, "json", FIRST, []);
    const lines = out
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { type: string; vm: { id: string } });
    assert.deepEqual(
      lines.map((l) => `${l.type} ${l.vm.id}`),
      ["ADDED vm-2", "ADDED vm-1", "MODIFIED vm-1", "MODIFIED vm-2"],
    );
  });

  it("waits out a server that is away for more tries than a restart takes, and says so once", async () => {
    // Refused eight times in a row (a daemon restarting), then the watch is back.
    const away = Array.from({ length: 8 }, (): VmEvent[] => []);
    const { out, err, since } = await run(false, "table", FIRST, ...away, SECOND);
    assert.match(out, /ADDED {6}vm-2 {3}Stopped/);
    assert.deepEqual(since, ["", ...Array.from({ length: 9 }, () => "e1-2")]);
    assert.equal(err.match(/the watch broke/g)?.length, 1, err);
    assert.match(err, /the watch broke \(connection reset\)/);
  });

  it("lists anew, not resumed, when the server ends the watch because the caller's access changed", async () => {
    const changed = new grpc.Metadata();
    changed.set("debvisor-error-reason", "ACCESS_CHANGED");
    const { since } = await runBreaking(changed, undefined, false, "table", FIRST, SECOND);
    assert.deepEqual(since, ["", ""], "opened again from nothing, not from e1-2");
  });

  it("fails at once when the first open is refused: a watch that never started is not waited for", async () => {
    const { err, since } = await runEnding(grpc.status.UNAVAILABLE, false, "table", [], SECOND);
    assert.deepEqual(since, [""], "opened once");
    assert.equal(err, "");
  });
});
