import type { EventObjectKind } from "../../src/gen/debvisor/v1/event_pb.js";
import { api, describe } from "./api.js";
import { el, eventTime, table } from "./dom.js";

/** One object's newest events (ListEvents tail), oldest last, as a table; the refusal if any. */
export async function objectEvents(
  objectKind: EventObjectKind,
  objectId: string,
  caption: string,
  signal: AbortSignal,
): Promise<HTMLElement> {
  try {
    const list = await api.events.listEvents({ objectKind, objectId, tail: 20 }, { signal });
    return list.events.length === 0
      ? el("p", {}, "No events.")
      : table(
          caption,
          ["Time", "Type", "Reason", "Message"],
          list.events
            .slice()
            .reverse()
            .map((e) => [eventTime(e), e.type, e.reason, e.message]),
        );
  } catch (err) {
    return el("p", { role: "alert", class: "error" }, describe(err));
  }
}
