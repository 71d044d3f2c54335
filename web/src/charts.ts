// Charts drawn as inline SVG through DOM APIs (no markup strings, no inline
// style: colours come from app.css classes), each with a text alternative:
// an accessible name that sums it up and a table of its data behind a toggle.

import { el, table } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
const W = 560;
const H = 180;
const PAD = { l: 48, r: 12, t: 10, b: 24 };

function svg(tag: string, attrs: Record<string, string | number>, ...kids: Node[]): SVGElement {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  e.append(...kids);
  return e;
}

function text(x: number, y: number, s: string, anchor = "end"): SVGElement {
  const t = svg("text", { x, y, "text-anchor": anchor, class: "axis" });
  t.textContent = s;
  return t;
}

/** One line of a line chart: x in epoch milliseconds. */
export interface Series {
  readonly name: string;
  readonly points: readonly (readonly [number, number])[];
}

/** What every chart shares: its title, how to show a value, and a test id. */
export interface ChartOptions {
  readonly title: string;
  readonly format: (y: number) => string;
  readonly testId?: string;
  /** The y axis goes at least this high (a percentage chart: 100). */
  readonly yMax?: number;
  /** Said after the title in the accessible name and the caption (e.g. "since 10:02"). */
  readonly note?: string;
}

const clock = (ms: number) => new Date(ms).toISOString().slice(11, 19);
/** Charts (by title) whose table the user opened: kept open when the chart is drawn again. */
const openTables = new Set<string>();

/**
 * A figure with the chart, a caption, and a button that shows the same data
 * as a table; `rows` are the table's cells, `head` its column headings.
 */
function figure(
  o: ChartOptions,
  summary: string,
  drawing: SVGElement,
  height: number,
  legend: HTMLElement | null,
  head: string[],
  rows: string[][],
): HTMLElement {
  const label = `${o.title}${o.note === undefined ? "" : ` (${o.note})`}: ${summary}`;
  drawing.setAttribute("role", "img");
  drawing.setAttribute("aria-label", label);
  drawing.setAttribute("viewBox", `0 0 ${W} ${height}`);
  drawing.setAttribute("class", "chart");
  const data = table(o.title, head, rows);
  data.hidden = !openTables.has(o.title);
  const show = `Show ${o.title} as a table`;
  const hide = `Hide the table of ${o.title}`;
  const toggle = el(
    "button",
    {
      type: "button",
      class: "link",
      "aria-expanded": String(!data.hidden),
      onclick: () => {
        data.hidden = !data.hidden;
        if (data.hidden) openTables.delete(o.title);
        else openTables.add(o.title);
        toggle.setAttribute("aria-expanded", String(!data.hidden));
        toggle.textContent = data.hidden ? show : hide;
      },
    },
    data.hidden ? show : hide,
  );
  return el(
    "figure",
    { class: "figure", "data-testid": o.testId },
    el("figcaption", {}, o.title, o.note === undefined ? "" : ` (${o.note})`),
    drawing,
    legend,
    toggle,
    data,
  );
}

/** The smallest of 1, 2, 5 times a power of ten at or above `max` (a round top for the axis). */
function roundUp(max: number): number {
  if (max <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  return ([1, 2, 5, 10].find((m) => m * p >= max) ?? 10) * p;
}

function yAxis(max: number, format: (y: number) => string): { scale: number; g: SVGElement } {
  const top = roundUp(max);
  const g = svg("g", {});
  for (const f of [0, 0.5, 1]) {
    const y = PAD.t + (H - PAD.t - PAD.b) * (1 - f);
    g.append(
      svg("line", { x1: PAD.l, x2: W - PAD.r, y1: y, y2: y, class: "grid" }),
      text(PAD.l - 4, y + 4, format(top * f)),
    );
  }
  return { scale: (H - PAD.t - PAD.b) / top, g };
}

/** A line chart of series over time; each series keeps its colour by position. */
export function lineChart(series: readonly Series[], o: ChartOptions): HTMLElement {
  const all = series.flatMap((s) => s.points);
  const x0 = Math.min(...all.map((p) => p[0]));
  const x1 = Math.max(...all.map((p) => p[0]), x0 + 1);
  const max = Math.max(o.yMax ?? 0, ...all.map((p) => p[1]));
  const { scale, g } = yAxis(max, o.format);
  const xs = (x: number) => PAD.l + ((x - x0) / (x1 - x0)) * (W - PAD.l - PAD.r);
  const drawing = svg("svg", {}, g);
  if (all.length > 0)
    drawing.append(text(PAD.l, H - 6, clock(x0), "start"), text(W - PAD.r, H - 6, clock(x1)));
  series.forEach((s, i) => {
    drawing.append(
      svg("polyline", {
        class: `line s${i % 6}`,
        "data-points": s.points.length,
        points: s.points
          .map(([x, y]) => `${xs(x).toFixed(1)},${(H - PAD.b - y * scale).toFixed(1)}`)
          .join(" "),
      }),
    );
  });
  const latest = (s: Series) => s.points.at(-1)?.[1];
  const summary =
    all.length === 0
      ? "no samples yet"
      : series
          .map((s) => {
            const l = latest(s);
            return `${s.name} ${l === undefined ? "no samples" : `now ${o.format(l)}`}`;
          })
          .join("; ");
  // The table: each series summed up (samples of different series rarely share a time).
  const rows = series.map((s) => {
    const ys = s.points.map((p) => p[1]);
    const f = (y: number | undefined) => (y === undefined ? "" : o.format(y));
    return [
      s.name,
      f(ys.at(-1)),
      f(ys.length === 0 ? undefined : Math.min(...ys)),
      f(ys.length === 0 ? undefined : ys.reduce((a, b) => a + b, 0) / ys.length),
      f(ys.length === 0 ? undefined : Math.max(...ys)),
      String(ys.length),
      s.points.length === 0
        ? ""
        : `${clock(s.points[0]?.[0] ?? 0)}–${clock(s.points.at(-1)?.[0] ?? 0)}`,
    ];
  });
  const legend = el(
    "ul",
    { class: "legend" },
    series.map((s, i) => el("li", { class: `s${i % 6}` }, s.name)),
  );
  return figure(
    o,
    summary,
    drawing,
    H,
    legend,
    ["Series", "Now", "Lowest", "Average", "Highest", "Samples", "From–to (UTC)"],
    rows,
  );
}

/** A horizontal bar chart: one bar per item. */
export function barChart(
  bars: readonly { readonly name: string; readonly value: number }[],
  o: ChartOptions,
): HTMLElement {
  const max = Math.max(o.yMax ?? 0, ...bars.map((b) => b.value), 1e-9);
  const row = 24;
  const height = PAD.t + 4 + bars.length * row;
  const left = 210;
  const drawing = svg("svg", {});
  bars.forEach((b, i) => {
    const y = PAD.t + i * row;
    const w = (b.value / max) * (W - left - 90);
    drawing.append(
      text(left - 6, y + row * 0.65, b.name.length > 32 ? `${b.name.slice(0, 31)}…` : b.name),
      svg("rect", {
        x: left,
        y: y + 2,
        width: Math.max(1, w).toFixed(1),
        height: Math.max(2, row - 4).toFixed(1),
        class: `bar s${i % 6}`,
      }),
      text(left + w + 4, y + row * 0.65, o.format(b.value), "start"),
    );
  });
  const summary =
    bars.length === 0
      ? "nothing to show"
      : bars.map((b) => `${b.name} ${o.format(b.value)}`).join("; ");
  return figure(
    o,
    summary,
    drawing,
    height,
    null,
    ["Name", "Value"],
    bars.map((b) => [b.name, o.format(b.value)]),
  );
}
