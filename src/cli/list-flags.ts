import type { Command } from "commander";
import { UsageError } from "./cli-errors.js";
import { type Column, sortColumn, sortRows } from "./output.js";

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
