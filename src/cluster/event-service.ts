import { create } from "@bufbuild/protobuf";
import {
  type CallScope,
  decodePageToken,
  defineService,
  encodePageToken,
  MAX_PAGE_SIZE,
  RpcError,
  type ServiceBinding,
  scopeOf,
  timestampFromMs,
} from "../core/index.js";
import {
  type Event,
  EventObjectKind,
  EventSchema,
  EventService,
  EventSeverity,
} from "../gen/debvisor/v1/event_pb.js";
import type { EventFilter, EventLog, EventObjectKind as Kind, StoredEvent } from "./event-log.js";
import { shownJobId } from "./replication-handlers.js";
import { createWatchQuota, type WatchQuota } from "./watch-quota.js";

const KINDS: Readonly<Record<number, Kind | undefined>> = {
  [EventObjectKind.VM]: "vm",
  [EventObjectKind.NODE]: "node",
  [EventObjectKind.MIGRATION]: "migration",
  [EventObjectKind.REPLICATION]: "replication",
};
const WIRE_KINDS: Readonly<Record<string, EventObjectKind>> = Object.fromEntries(
  Object.entries(KINDS).map(([n, k]) => [k, Number(n) as EventObjectKind]),
);

/** An object filter from a request; node ids compare lower-case, like the inventory's. */
function filterOf(req: { objectKind: EventObjectKind; objectId: string }): EventFilter {
  const kind = KINDS[req.objectKind];
  if (kind === undefined) return {};
  return { kind, id: kind === "node" ? req.objectId.toLowerCase() : req.objectId };
}

/** Whether a stored event passes the request's filter and the caller's scope. */
function visible(e: StoredEvent, filter: EventFilter, scope: CallScope, since: number): boolean {
  const r = e.record;
  return (
    e.revision > since &&
    scope.canSee(r.tenant) &&
    (filter.kind === undefined || r.objectKind === filter.kind) &&
    (filter.id === undefined || filter.id === "" || r.objectId === filter.id)
  );
}

/** A stored event as the API shows it. */
export function eventOf(e: StoredEvent): Event {
  const r = e.record;
  return create(EventSchema, {
    revision: BigInt(e.revision),
    time: timestampFromMs(Number(r.timeMs)),
    objectKind: WIRE_KINDS[r.objectKind] ?? EventObjectKind.UNSPECIFIED,
    objectId: r.objectId,
    type: r.type,
    reason: r.reason,
    message: r.message,
    severity: r.warning ? EventSeverity.WARNING : EventSeverity.NORMAL,
    source: r.source,
    tenant: r.tenant,
  });
}

/** Reads of one page stop after this many stored events, matching or not. */
const MAX_SCANNED = 20_000;

/**
 * EventService: list and watch the cluster's events. Both are `any`-target
 * reads: a caller sees the events whose tenant its permission covers (node
 * events, tenant "", only cluster-wide callers), so an object it may not see
 * has no events, exactly like one that does not exist.
 */
export function createEventService(deps: {
  log: EventLog;
  /** A tenant's name for a replication job as stored (`<tenant>:<id>` when the tenant has one so named). */
  jobIdIn?: (tenant: string, id: string, signal: AbortSignal) => Promise<string>;
  /** Open watches per caller and tenant, shared with the list watches. */
  quota?: WatchQuota;
}): ServiceBinding {
  const { log } = deps;
  const quota = deps.quota ?? createWatchQuota();
  /** The request's filter as the caller means it: a tenant names its own jobs without the prefix. */
  const filterFor = async (
    req: { objectKind: EventObjectKind; objectId: string },
    ctx: { tenant?: string; signal: AbortSignal },
  ): Promise<EventFilter> => {
    const filter = filterOf(req);
    if (filter.kind !== "replication" || ctx.tenant === undefined || deps.jobIdIn === undefined)
      return filter;
    return { ...filter, id: await deps.jobIdIn(ctx.tenant, filter.id ?? "", ctx.signal) };
  };
  /** An event as this caller names its object. */
  const shown = (e: StoredEvent, tenant: string | undefined) => {
    const out = eventOf(e);
    if (tenant !== undefined && e.record.objectKind === "replication")
      out.objectId = shownJobId(out.objectId, tenant);
    return out;
  };
  return defineService(
    EventService,
    {
      listEvents: { permission: "event:list", mutating: false },
      watchEvents: { permission: "event:watch", mutating: false },
    },
    {
      async listEvents(req, ctx) {
        const filter = await filterFor(req, ctx);
        const scope = scopeOf(ctx);
        const since = Number(req.sinceRevision);
        if (req.tail > 0) {
          const t = await log.tail(
            filter,
            req.tail,
            (e) => visible(e, filter, scope, since),
            ctx.signal,
          );
          return {
            events: t.events.map((e) => shown(e, ctx.tenant)),
            nextPageToken: "",
            revision: BigInt(t.revision),
          };
        }
        const size = Math.min(req.pageSize === 0 ? 100 : req.pageSize, MAX_PAGE_SIZE);
        let after = req.pageToken === "" ? undefined : decodePageToken(req.pageToken);
        if (after !== undefined && !log.ownsKey(filter, after))
          throw new RpcError("PAGE_TOKEN_INVALID");
        const out: StoredEvent[] = [];
        let revision = 0;
        let scanned = 0;
        let more = true;
        while (out.length < size && more && scanned < MAX_SCANNED) {
          const page = await log.page(filter, { after, limit: 1000, signal: ctx.signal });
          revision ||= page.revision;
          more = page.more;
          for (const e of page.events) {
            scanned++;
            after = e.key;
            if (!visible(e, filter, scope, since)) continue;
            out.push(e);
            if (out.length === size) {
              more = more || e !== page.events[page.events.length - 1];
              break;
            }
          }
          if (page.events.length === 0) more = false;
        }
        return {
          events: out.map((e) => shown(e, ctx.tenant)),
          nextPageToken: more && after !== undefined ? encodePageToken(after) : "",
          revision: BigInt(revision),
        };
      },
      async *watchEvents(req, ctx) {
        const filter = await filterFor(req, ctx);
        const scope = scopeOf(ctx);
        const since = Number(req.sinceRevision);
        // From the revision after `since`, else only events recorded from now on.
        const from = since > 0 ? since + 1 : (await log.page(filter, { limit: 1 })).revision + 1;
        const release = quota.open(ctx);
        try {
          for await (const e of log.watch(filter, from, ctx.signal)) {
            if (visible(e, filter, scope, 0)) yield shown(e, ctx.tenant);
          }
        } finally {
          release();
        }
      },
    },
  );
}
