import { Command } from "commander";
import {
  type Event,
  EventObjectKind,
  EventSchema,
  EventService,
  EventSeverity,
} from "../gen/debvisor/v1/event_pb.js";
import type { CliContext } from "./cli-context.js";
import { UsageError } from "./cli-errors.js";
import { parseWhole } from "./duration.js";
import { withExamples } from "./help-text.js";
import {
  type Column,
  isoTime,
  messageJson,
  renderColumns,
  type Style,
  serialize,
  shortAge,
  terminalSafe,
} from "./output.js";
import { watchInterrupts } from "./progress.js";

/** What `--for` and `describe` name: an object kind as hvctl spells it. */
export const OBJECT_KINDS: Readonly<Record<string, EventObjectKind>> = {
  vm: EventObjectKind.VM,
  node: EventObjectKind.NODE,
  migration: EventObjectKind.MIGRATION,
  replication: EventObjectKind.REPLICATION,
};
const KIND_NAMES = Object.fromEntries(Object.entries(OBJECT_KINDS).map(([k, v]) => [v, k]));

/** `vm/vm-001` -> the request's object fields. */
function parseFor(text: string): { objectKind: EventObjectKind; objectId: string } {
  const at = text.indexOf("/");
  const kind = OBJECT_KINDS[text.slice(0, at)];
  const id = text.slice(at + 1);
  if (at < 0 || kind === undefined || id === "")
    throw new UsageError(
      `--for: KIND/ID with KIND one of ${Object.keys(OBJECT_KINDS).join(", ")}, got "${text}"`,
    );
  return { objectKind: kind, objectId: id };
}

const severity = (e: Event, style: Style) =>
  e.severity === EventSeverity.WARNING ? style.warn("Warning") : "Normal";
const ageOf = (e: Event) => {
  const ms = Number(e.time?.seconds ?? 0n) * 1000 + Math.floor((e.time?.nanos ?? 0) / 1e6);
  return shortAge(Date.now() - ms);
};
const messageOf = (e: Event) =>
  terminalSafe(e.reason === "" ? e.message : `${e.message} (${e.reason})`);
const objectOf = (e: Event) => `${KIND_NAMES[e.objectKind] ?? "?"}/${e.objectId}`;

/** The columns of an event table; `describe` leaves out the object, which it is about. */
export function eventColumns(style: Style, withObject: boolean): Column<Event>[] {
  return [
    { header: "AGE", value: ageOf },
    { header: "TYPE", value: (e) => severity(e, style) },
    { header: "EVENT", value: (e) => e.type },
    ...(withObject ? [{ header: "OBJECT", value: objectOf }] : []),
    { header: "FROM", value: (e) => e.source },
    { header: "TIME", wide: true, value: (e) => isoTime(e.time) },
    { header: "REVISION", wide: true, value: (e) => String(e.revision) },
    { header: "MESSAGE", value: messageOf },
  ];
}

/** One event as one line, for a stream (no table to redraw). */
function eventLine(e: Event, style: Style): string {
  return `${terminalSafe(`${isoTime(e.time)}  ${severity(e, style)}  ${e.type}  ${objectOf(e)}  ${e.source}  ${messageOf(e)}`, { keepColours: true })}\n`;
}

/** The newest `tail` events of one object (or of the cluster), oldest first, with the revision read at. */
export async function recentEvents(
  ctx: CliContext,
  object: { objectKind: EventObjectKind; objectId: string } | undefined,
  tail: number,
): Promise<{ events: Event[]; revision: bigint }> {
  const r = await ctx.client(EventService).listEvents({ ...object, tail });
  return { events: r.events, revision: r.revision };
}

/** `hvctl events ...`: what the cluster did, and with --watch what it does next. */
export function eventsCommand(cli: () => CliContext): Command {
  const events = new Command("events")
    .description(
      "what the cluster did and why (vms placed, moved, fenced; migrations; failovers; replication; nodes)",
    )
    .option("--for <kind/id>", "one object's events: vm/ID, node/ID, migration/ID, replication/ID")
    .option("-w, --watch", "then print each new event as it happens, until Ctrl-C")
    .option("--limit <n>", "how many past events (1 to 1000)", "50")
    .action(async (opts: { for?: string; watch?: boolean; limit: string }) => {
      const object = opts.for === undefined ? undefined : parseFor(opts.for);
      const limit = parseWhole("--limit", opts.limit, 1, 1000);
      const ctx = cli();
      const past = await recentEvents(ctx, object, limit);
      const json = ctx.format === "json" || ctx.format === "yaml";
      if (!opts.watch) {
        ctx.print({ events: past.events.map((e) => messageJson(EventSchema, e)) }, () =>
          past.events.length === 0
            ? "no events\n"
            : renderColumns(eventColumns(ctx.style, object === undefined), past.events, ctx.wide),
        );
        return;
      }
      // A stream: one line (or one JSON document) per event, nothing redrawn.
      const show = (e: Event) =>
        ctx.out(
          json
            ? ctx.format === "json"
              ? `${JSON.stringify(messageJson(EventSchema, e))}\n`
              : `---\n${serialize(messageJson(EventSchema, e), "yaml")}`
            : eventLine(e, ctx.style),
        );
      // Ctrl-C is taken before anything is printed: whoever saw a line may press it.
      const abort = new AbortController();
      const interrupts = watchInterrupts({
        signals: ctx.io.signals ?? process,
        tty: false,
        write: ctx.err,
        stopWatching: () => abort.abort(),
      });
      try {
        for (const e of past.events) show(e);
        for await (const e of ctx
          .client(EventService)
          .watchEvents({ ...object, sinceRevision: past.revision }, { signal: abort.signal }))
          show(e);
      } catch (err) {
        if (!abort.signal.aborted) throw err;
      } finally {
        interrupts.dispose();
      }
    });
  withExamples(
    events,
    "hvctl events",
    "hvctl events --for vm/vm-007",
    "hvctl events --watch",
    "hvctl events --for node/node-03 -w -o json",
  );
  return events;
}
