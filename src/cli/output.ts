import {
  type DescField,
  type DescMessage,
  type JsonValue,
  type MessageShape,
  toJson,
} from "@bufbuild/protobuf";
import { stringify as stringifyYaml } from "yaml";
import { msFromTimestamp, terminalSafe } from "../core/index.js";

/**
 * Byte counts as people read them, and text that cannot drive a terminal
 * (core's, shared with the control plane's messages and its log lines for people).
 */
export { formatBytes, type TerminalSafeOptions, terminalSafe } from "../core/index.js";

/** How a command prints its result: `-o table` (default), `wide`, `json` or `yaml`. */
export type OutputFormat = "table" | "wide" | "json" | "yaml";

/** Every value `-o` accepts. */
export const OUTPUT_FORMATS: readonly OutputFormat[] = ["table", "wide", "json", "yaml"];

/** Colours for people on a terminal; identity functions otherwise. */
export interface Style {
  readonly good: (text: string) => string;
  readonly bad: (text: string) => string;
  readonly warn: (text: string) => string;
  readonly dim: (text: string) => string;
}

const sgr = (code: number) => (text: string) => `\x1b[${code}m${text}\x1b[0m`;
const plain = (text: string) => text;

/**
 * Colours only when stdout is a terminal and NO_COLOR is unset or empty
 * (https://no-color.org), so pipes and files never receive escape codes.
 */
export function createStyle(isTty: boolean, env: NodeJS.ProcessEnv): Style {
  const on = isTty && (env.NO_COLOR === undefined || env.NO_COLOR === "");
  return on
    ? { good: sgr(32), bad: sgr(31), warn: sgr(33), dim: sgr(2) }
    : { good: plain, bad: plain, warn: plain, dim: plain };
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: matching terminal escape codes is the point
const ANSI = /\x1b\[[0-9;]*m/g;

/** A table cell or field value: escaped, line breaks included, so a name can never forge a row. */
const cell = (text: string) => terminalSafe(text, { keepColours: true });

/** Visible width of text that may hold colour codes. */
export function visibleWidth(text: string): number {
  return text.replace(ANSI, "").length;
}

/** Renders rows as an aligned plain-text table with a header, like kubectl. Colour codes do not count as width. */
export function renderTable(
  headers: readonly string[],
  rows: readonly (readonly string[])[],
): string {
  const widths = headers.map((h, i) =>
    Math.max(h.length, ...rows.map((r) => visibleWidth(cell(r[i] ?? "")))),
  );
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) =>
        i === cells.length - 1
          ? c
          : c + " ".repeat(Math.max(0, (widths[i] ?? 0) - visibleWidth(c))),
      )
      .join("   ")
      .trimEnd();
  return `${[line(headers.map(cell)), ...rows.map((r) => line(r.map(cell)))].join("\n")}\n`;
}

/** One column of a table; `wide` columns appear only with `-o wide`. */
export interface Column<T> {
  readonly header: string;
  readonly value: (row: T) => string;
  readonly wide?: boolean;
  /** What `--sort-by` orders by, when not the shown text (sizes, ages). */
  readonly sort?: (row: T) => number | bigint | string;
  /** Changes all the time on its own (ages, load): a watch in a pipe does not print a row for it alone. */
  readonly volatile?: boolean;
}

/** A column name as `--sort-by` takes it: the header in lower case, spaces as dashes. */
export const sortName = (header: string) => header.toLowerCase().replace(/ /g, "-");

/**
 * The column `--sort-by NAME` names (any column, wide ones included), or
 * undefined for an unknown name; `names` lists the valid ones for the error.
 */
export function sortColumn<T>(
  columns: readonly Column<T>[],
  by: string,
): { column: Column<T> | undefined; names: string[] } {
  const names = columns.map((c) => sortName(c.header));
  const want = sortName(by.trim());
  return { column: columns.find((c) => sortName(c.header) === want), names };
}

/** `rows` ordered by `column` (numbers as numbers, text naturally: node-2 before node-10), stable. */
export function sortRows<T>(column: Column<T>, rows: readonly T[]): T[] {
  const key = column.sort ?? column.value;
  const text = new Intl.Collator("en", { numeric: true });
  return rows
    .map((row, i) => ({ row, i, k: key(row) }))
    .sort((a, b) => {
      const c =
        typeof a.k === "string" || typeof b.k === "string"
          ? text.compare(String(a.k), String(b.k))
          : a.k < b.k
            ? -1
            : a.k > b.k
              ? 1
              : 0;
      return c === 0 ? a.i - b.i : c;
    })
    .map((x) => x.row);
}

/** Renders `rows` with the columns the format asks for. */
export function renderColumns<T>(
  columns: readonly Column<T>[],
  rows: readonly T[],
  wide: boolean,
): string {
  const shown = columns.filter((c) => wide || c.wide !== true);
  return renderTable(
    shown.map((c) => c.header),
    rows.map((r) => shown.map((c) => c.value(r))),
  );
}

/** `key: value` lines with the values aligned, for one object (`node get`, `auth whoami`). */
export function renderFields(fields: readonly (readonly [string, string])[]): string {
  const width = Math.max(0, ...fields.map(([k]) => k.length + 1));
  return `${fields.map(([k, v]) => `${`${k}:`.padEnd(width)}  ${cell(v)}`.trimEnd()).join("\n")}\n`;
}

/** A duration in the short form operators read at a glance: 12s, 5m, 3h, 2d. */
export function shortAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172_800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}

/** A debvisor.v1.Timestamp as RFC 3339 UTC (what JSON and YAML output carry), or "" when unset. */
export function isoTime(ts: { seconds: bigint; nanos: number } | undefined): string {
  if (ts === undefined) return "";
  return new Date(msFromTimestamp(ts)).toISOString().replace(".000Z", "Z");
}

/** A timestamp for a table: RFC 3339 without fractions, or "-" when unset. */
export function tableTime(ts: { seconds: bigint; nanos: number } | undefined): string {
  return ts === undefined ? "-" : isoTime({ seconds: ts.seconds, nanos: 0 });
}

const TIMESTAMP = "debvisor.v1.Timestamp";

/**
 * A message as protobuf JSON for `-o json` and `-o yaml`: protobuf JSON field
 * names, scalar fields present even when zero (so scripts can rely on the
 * keys; unset messages such as a timestamp never set are left out), enums
 * by name, and debvisor.v1.Timestamp fields as RFC 3339 strings.
 */
export function messageJson<Desc extends DescMessage>(
  schema: Desc,
  message: MessageShape<Desc>,
): JsonValue {
  const json = toJson(schema, message, { alwaysEmitImplicit: true });
  fixTimes(schema, message as unknown as Record<string, unknown>, json);
  return json;
}

function fixTimes(desc: DescMessage, msg: Record<string, unknown>, json: JsonValue): void {
  if (json === null || typeof json !== "object" || Array.isArray(json)) return;
  for (const field of desc.fields) {
    const value = msg[field.localName];
    const key = field.jsonName;
    if (value === undefined || !(key in json)) continue;
    const sub = messageOf(field);
    if (sub === undefined) continue;
    if (field.fieldKind === "message") json[key] = convert(sub, value, json[key] as JsonValue);
    else if (field.fieldKind === "list") {
      const arr = json[key] as JsonValue[];
      (value as unknown[]).forEach((v, i) => {
        arr[i] = convert(sub, v, arr[i] as JsonValue);
      });
    } else if (field.fieldKind === "map") {
      const obj = json[key] as Record<string, JsonValue>;
      for (const [k, v] of Object.entries(value as Record<string, unknown>))
        obj[k] = convert(sub, v, obj[k] as JsonValue);
    }
  }
}

function messageOf(field: DescField): DescMessage | undefined {
  if (field.fieldKind === "message") return field.message;
  if (field.fieldKind === "list" && field.listKind === "message") return field.message;
  if (field.fieldKind === "map" && field.mapKind === "message") return field.message;
  return undefined;
}

function convert(desc: DescMessage, value: unknown, json: JsonValue): JsonValue {
  if (desc.typeName === TIMESTAMP)
    return isoTime(value as { seconds: bigint; nanos: number }) || null;
  fixTimes(desc, value as Record<string, unknown>, json);
  return json;
}

/** Serializes data for `-o json` (indented) or `-o yaml`. */
export function serialize(data: unknown, format: "json" | "yaml"): string {
  return format === "json" ? `${JSON.stringify(data, null, 2)}\n` : stringifyYaml(data);
}
