import type { JsonValue } from "@bufbuild/protobuf";
import type { Command } from "commander";
import type { WatchEventHeader } from "../gen/debvisor/v1/watch_pb.js";
import type { CliContext } from "./cli-context.js";
import { UsageError } from "./cli-errors.js";
import { type Column, renderColumns, sortColumn, sortRows } from "./output.js";
import { allPages, type Page } from "./pages.js";
import type { WatchListOptions } from "./watch-list.js";

/** The options list commands share (see {@link withListFlags}). */
export interface ListFlags {
  readonly sortBy?: string;
  readonly tenant?: string;
  readonly watch?: boolean;
  readonly selector?: string[];
}

/**
 * Adds `--sort-by` and `--tenant` to a list command, and `--selector` and
 * `--watch` where the list has labels or can be watched.
 */
export function withListFlags(
  cmd: Command,
  what: { readonly watch?: boolean; readonly selector?: boolean } = {},
): Command {
  cmd
    .option(
      "--sort-by <column>",
      "order the rows by this column, named by its header in lower case (name, status, last-seen, ...)",
    )
    .option("--tenant <tenant>", "only what this tenant sees (for cluster-wide callers)");
  if (what.selector)
    cmd.option(
      "-l, --selector <requirements...>",
      "only those whose labels match every requirement: key=value, key!=value, key, !key (comma-separated or repeated)",
    );
  if (what.watch)
    cmd.option(
      "-w, --watch",
      "after the list, follow it: the table redrawn on a terminal, a line per change in a pipe (JSON Lines with -o json); Ctrl-C stops",
    );
  return cmd;
}

/** The column `--sort-by` names, checked before anything is sent; undefined without the flag. */
export function sortColumnOf<T>(
  columns: readonly Column<T>[],
  by: string | undefined,
): Column<T> | undefined {
  if (by === undefined) return undefined;
  const { column, names } = sortColumn(columns, by);
  if (column === undefined)
    throw new UsageError(`--sort-by: no column "${by}"; one of ${names.join(", ")}`);
  return column;
}

/** `rows` in `--sort-by` order (as listed without it). */
export function sortedRows<T>(
  columns: readonly Column<T>[],
  rows: T[],
  by: string | undefined,
): T[] {
  const column = sortColumnOf(columns, by);
  return column === undefined ? rows : sortRows(column, rows);
}

/** The `--selector` requirements as the server takes them: one comma-separated string. */
export function selectorText(selector: readonly string[] | undefined): string {
  return (selector ?? []).join(",");
}

/** What {@link showList} shows: a list command's columns, pages and, for --watch, its watch. */
export interface ShownList<T, E extends { header?: WatchEventHeader }> {
  readonly columns: readonly Column<T>[];
  readonly flags: ListFlags;
  /** The list's key in JSON (`vms`), and one item's in a watch's JSON Lines (`vm`). */
  readonly plural: string;
  readonly name: string;
  readonly json: (item: T) => JsonValue;
  /** A row's identity, for a watch. */
  readonly key: (item: T) => string;
  /** One page of the listing. */
  readonly page: (pageToken: string) => Promise<Page<T>>;
  /** How --watch opens the list's watch, and the item of its events. */
  readonly watch?: Pick<WatchListOptions<T, E>, "open" | "item">;
  /** What a table says for an empty list (default: the header alone). */
  readonly empty?: string;
}

/**
 * A list command's output: every page, in `--sort-by` order, as a table or
 * JSON/YAML; with `--watch`, the list followed (watch-list.ts, loaded only then).
 */
export async function showList<T, E extends { header?: WatchEventHeader }>(
  ctx: CliContext,
  l: ShownList<T, E>,
): Promise<void> {
  sortColumnOf(l.columns, l.flags.sortBy);
  if (l.flags.watch && l.watch !== undefined) {
    const { watchList } = await import("./watch-list.js");
    return watchList(ctx, { ...l.watch, ...l, sortBy: l.flags.sortBy });
  }
  const rows = sortedRows(l.columns, await allPages(l.page), l.flags.sortBy);
  ctx.print({ [l.plural]: rows.map(l.json) }, () =>
    rows.length === 0 && l.empty !== undefined ? l.empty : renderColumns(l.columns, rows, ctx.wide),
  );
}
