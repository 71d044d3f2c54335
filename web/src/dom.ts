// A few DOM helpers: elements from data, never from HTML strings, so nothing
// a server or a user typed can become markup.

type Child = Node | string | number | false | null | undefined;
type Attrs = Record<string, string | number | boolean | ((e: Event) => void) | undefined>;

/** Creates an element; `on*` attributes become listeners, booleans toggle attributes. */
export function el(tag: string, attrs: Attrs = {}, ...children: (Child | Child[])[]): HTMLElement {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (typeof v === "function") e.addEventListener(k.slice(2).toLowerCase(), v);
    else if (v === true) e.setAttribute(k, "");
    else e.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(typeof c === "object" ? c : String(c));
  }
  return e;
}

/** Replaces the children of `parent`. */
export function mount(parent: Element, ...children: (Child | Child[])[]): void {
  parent.replaceChildren();
  for (const c of children.flat())
    if (c !== null && c !== undefined && c !== false)
      parent.append(typeof c === "object" ? c : String(c));
}

/** The name a control is found again by after a redraw: its accessible label or its text. */
const nameOf = (e: Element) => `${e.tagName}:${e.getAttribute("aria-label") ?? e.textContent}`;

/**
 * Replaces the children of `parent` like {@link mount}, and when focus was
 * inside it, moves focus to the control of the same name in the new content,
 * so a list redrawn by its watch does not throw a keyboard user back to the top.
 */
export function remount(parent: Element, ...children: (Child | Child[])[]): void {
  const active = document.activeElement;
  const focused = active !== null && parent.contains(active) ? nameOf(active) : undefined;
  mount(parent, ...children);
  if (focused === undefined) return;
  const again = [...parent.querySelectorAll("a, button, input, select, textarea")].find(
    (e) => nameOf(e) === focused,
  );
  (again as HTMLElement | undefined)?.focus();
}

/** A table with a caption, column headings and rows. */
export function table(
  caption: string,
  head: string[],
  rows: Child[][],
  testId?: string,
): HTMLElement {
  return el(
    "table",
    { "data-testid": testId },
    el("caption", {}, caption),
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        head.map((h) => el("th", { scope: "col" }, h)),
      ),
    ),
    el(
      "tbody",
      {},
      rows.map((r) =>
        el(
          "tr",
          {},
          r.map((c) => el("td", {}, c)),
        ),
      ),
    ),
  );
}

/** A labelled progress bar. */
export function progress(label: string, pct: number): HTMLElement {
  return el(
    "div",
    { class: "progress" },
    el("progress", { max: 100, value: pct, "aria-label": label }),
    el("span", { "data-testid": "progress-pct" }, `${pct} %`),
  );
}

/** Bytes in binary units. */
export function bytes(n: bigint | number): string {
  let v = Number(n);
  for (const u of ["B", "KiB", "MiB", "GiB", "TiB"]) {
    if (v < 1024 || u === "TiB") return `${v.toFixed(v < 10 && u !== "B" ? 1 : 0)} ${u}`;
    v /= 1024;
  }
  return `${v}`;
}

/** Shows a short message to screen readers and sighted users alike. */
export function toast(text: string): void {
  const t = document.getElementById("toast");
  if (t !== null) t.textContent = text;
}

/** An event's (or any record's) time as "YYYY-MM-DD HH:MM:SS" in UTC; "" when unset. */
export function eventTime(e: { time?: { seconds: bigint } }): string {
  return e.time === undefined
    ? ""
    : new Date(Number(e.time.seconds) * 1000).toISOString().slice(0, 19).replace("T", " ");
}
