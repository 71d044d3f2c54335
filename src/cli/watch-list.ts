import { setTimeout as sleep } from "node:timers/promises";
import type { JsonValue } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import type { ServiceClient } from "../client/index.js";
import {
  type WatchEventHeader,
  WatchEventType,
  type WatchFrom,
  WatchService,
} from "../gen/debvisor/v1/watch_pb.js";
import type { CliContext } from "./cli-context.js";
import { CallError, streamBreak, UsageError } from "./cli-errors.js";
import { sortColumnOf } from "./list-flags.js";
import { type Column, renderColumns, sortRows, terminalSafe, visibleWidth } from "./output.js";
import { watchInterrupts } from "./progress.js";

/** One event of a watch, whatever the list. */
export interface ListEvent<T> {
  readonly type: WatchEventType;
  readonly item: T | undefined;
  readonly revision: string;
  readonly resumed: boolean;
}

/** What {@link watchList} needs to know of a list. */
export interface WatchListOptions<T, E extends { header?: WatchEventHeader }> {
  readonly columns: readonly Column<T>[];
  /** The identity of a row. */
  readonly key: (item: T) => string;
  readonly sortBy?: string;
  /** The item's name in JSON Lines (`node`, `vm`, ...) and its JSON. */
  readonly name: string;
  readonly json: (item: T) => JsonValue;
  /**
   * Opens the watch from a revision (`since_revision` "": the whole list) with
   * the client `watch()` makes; `signal` aborts on Ctrl-C and must end the call.
   */
  readonly open: (
    watch: () => ServiceClient<typeof WatchService>,
    from: WatchFrom,
    signal: AbortSignal,
  ) => AsyncIterable<E>;
  /** The object an event carries. */
  readonly item: (event: E) => T | undefined;
  /** How a broken watch is opened again (defaults: {@link RECONNECT}). */
  readonly reconnect?: Partial<typeof RECONNECT>;
}

/** A watch stream's events as {@link ListEvent}s, the item taken by `item`. */
async function* listEvents<E extends { header?: WatchEventHeader }, T>(
  stream: AsyncIterable<E>,
  item: (event: E) => T | undefined,
): AsyncIterable<ListEvent<T>> {
  for await (const e of stream)
    yield {
      type: e.header?.type ?? WatchEventType.UNSPECIFIED,
      item: item(e),
      revision: e.header?.revision ?? "",
      resumed: e.header?.resumed ?? false,
    };
}

/**
 * A watch whose stream broke is opened again, after a wait that doubles
 * from `firstMs` up to `maxMs`, for as long as it is refused UNAVAILABLE
 * within `forMs` of the break: a daemon restarting (seconds) is waited for.
 */
const RECONNECT = { forMs: 60_000, firstMs: 500, maxMs: 5_000 };
const EVENT_NAMES: Partial<Record<WatchEventType, string>> = {
  [WatchEventType.ADDED]: "ADDED",
  [WatchEventType.MODIFIED]: "MODIFIED",
  [WatchEventType.DELETED]: "DELETED",
};

/**
 * `list --watch`: the list, then its changes until Ctrl-C. On a terminal the
 * table is redrawn after each batch of changes; in a pipe the first table has
 * an EVENT column and each change is one more line, aligned with it (a row
 * whose shown columns did not change, ages aside, is not printed again);
 * with -o json each change is one JSON line. A broken stream is opened again
 * from the last revision (the server resends the whole list if it no longer
 * holds it). Ctrl-C stops watching as every watch does: "stopped watching"
 * on stderr, exit 0.
 */
export async function watchList<T, E extends { header?: WatchEventHeader }>(
  ctx: CliContext,
  o: WatchListOptions<T, E>,
): Promise<void> {
  let client: ServiceClient<typeof WatchService> | undefined;
  const watch = () => {
    client ??= ctx.client(WatchService);
    return client;
  };
  if (ctx.format === "yaml")
    throw new UsageError("--watch prints a table, or JSON Lines with -o json; not YAML");
  const sortBy = sortColumnOf(o.columns, o.sortBy);
  const shown = o.columns.filter((c) => ctx.wide || c.wide !== true);
  const redraw = ctx.io.tty?.stdout === true && ctx.format !== "json";
  const rows = new Map<string, T>();
  const ordered = () => {
    const all = [...rows.values()];
    return sortBy === undefined ? all : sortRows(sortBy, all);
  };
  /** Per row, what the pipe last printed of it (volatile columns left out). */
  const printed = new Map<string, string>();
  let widths: number[] | undefined;
  const cells = (item: T) => shown.map((c) => terminalSafe(c.value(item), { keepColours: true }));
  const steady = (item: T) =>
    shown
      .filter((c) => c.volatile !== true)
      .map((c) => c.value(item))
      .join("\u0000");
  const line = (cols: readonly string[]) =>
    cols
      .map((c, i) =>
        i === cols.length - 1
          ? c
          : c + " ".repeat(Math.max(0, (widths?.[i] ?? 0) - visibleWidth(c))),
      )
      .join("   ")
      .trimEnd();

  const flush = (batch: { type: WatchEventType; item: T }[]) => {
    if (ctx.format === "json") {
      for (const { type, item } of batch)
        ctx.out(`${JSON.stringify({ type: EVENT_NAMES[type], [o.name]: o.json(item) })}\n`);
      return;
    }
    if (redraw) {
      ctx.io.out("\x1b[H\x1b[2J");
      ctx.out(renderColumns(o.columns, ordered(), ctx.wide));
      return;
    }
    if (widths === undefined) {
      const first = ordered().map((item) => ["ADDED", ...cells(item)]);
      const head = ["EVENT", ...shown.map((c) => c.header)];
      // The EVENT column fits MODIFIED from the start.
      widths = head.map((h, i) =>
        Math.max(i === 0 ? 8 : h.length, ...first.map((r) => visibleWidth(r[i] ?? ""))),
      );
      ctx.out(`${[head, ...first].map(line).join("\n")}\n`);
      for (const item of rows.values()) printed.set(o.key(item), steady(item));
      return;
    }
    for (const { type, item } of batch) {
      const key = o.key(item);
      const now = steady(item);
      if (type === WatchEventType.MODIFIED && printed.get(key) === now) continue;
      if (type === WatchEventType.DELETED) printed.delete(key);
      else printed.set(key, now);
      ctx.out(`${line([EVENT_NAMES[type] ?? "?", ...cells(item)])}\n`);
    }
  };

  const again = { ...RECONNECT, ...o.reconnect };
  const abort = new AbortController();
  const interrupts = watchInterrupts({
    signals: ctx.io.signals ?? process,
    tty: false,
    write: ctx.err,
    stopWatching: () => abort.abort(),
  });
  let since = "";
  /** When the stream broke, while it has not been opened again. */
  let brokeAt: number | undefined;
  /** Whether a stream ever delivered: a watch that never started is not waited for (a wrong server). */
  let started = false;
  try {
    for (let failures = 0; ; ) {
      const fresh = new Set<string>();
      let synced = false;
      let batch: { type: WatchEventType; item: T }[] = [];
      try {
        const from = { $typeName: "debvisor.v1.WatchFrom", sinceRevision: since } as const;
        for await (const ev of listEvents(o.open(watch, from, abort.signal), o.item)) {
          failures = 0;
          brokeAt = undefined;
          started = true;
          if (ev.type === WatchEventType.SYNCED) {
            if (!synced && !ev.resumed)
              // The whole list again: what it no longer has is gone.
              for (const [key, item] of rows)
                if (!fresh.has(key)) {
                  rows.delete(key);
                  batch.push({ type: WatchEventType.DELETED, item });
                }
            synced = true;
            since = ev.revision;
            flush(batch);
            batch = [];
            continue;
          }
          const item = ev.item;
          if (item === undefined || EVENT_NAMES[ev.type] === undefined) continue;
          const key = o.key(item);
          if (ev.type === WatchEventType.DELETED) rows.delete(key);
          else {
            rows.set(key, item);
            fresh.add(key);
          }
          batch.push({ type: ev.type, item });
        }
        throw new CallError("watch", {
          code: grpc.status.UNAVAILABLE,
          details: "the server ended the watch",
        });
      } catch (e) {
        const retry =
          e instanceof CallError &&
          (e.code === grpc.status.UNAVAILABLE || e.code === grpc.status.INTERNAL);
        brokeAt ??= Date.now();
        if (!retry || !started || Date.now() - brokeAt > again.forMs) throw e;
        // The caller's access changed: not resumed, the whole list again, as it may see it now.
        if (e.trailer("debvisor-error-reason") === "ACCESS_CHANGED") since = "";
        // Said once per break, not at every try while the server is away.
        if (failures === 0)
          ctx.err(
            `hvctl: the watch broke (${streamBreak(e)}); watching again from revision ${since || "0"}\n`,
          );
        await sleep(Math.min(again.maxMs, again.firstMs * 2 ** failures), undefined, {
          signal: abort.signal,
        });
        failures++;
      }
    }
  } catch (err) {
    // Ctrl-C: the call cancelled, or a wait for the server cut short.
    if (!abort.signal.aborted) throw err;
  } finally {
    interrupts.dispose();
  }
}
