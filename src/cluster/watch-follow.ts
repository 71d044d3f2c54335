/**
 * Turns one list watch into a call's stream of watch events: the caller's
 * view of each change, a SYNCED header once the view is sent, the watch
 * counted against the caller's quota while it runs and ended by the call or
 * by the daemon's shutdown.
 */
import { create } from "@bufbuild/protobuf";
import type { CallContext } from "../core/index.js";
import {
  type WatchEventHeader,
  WatchEventHeaderSchema,
  WatchEventType,
  type WatchFrom,
} from "../gen/debvisor/v1/watch_pb.js";
import type { ListWatch, WatchView } from "./list-watch.js";
import type { WatchQuota } from "./watch-quota.js";

/** Dependencies of {@link createWatchFollow}. */
export interface WatchFollowDeps {
  /** Open watches per caller and tenant. */
  readonly quota: WatchQuota;
  /** Ends every watch (the daemon's shutdown). */
  readonly closing?: AbortSignal;
}

/** Runs one watch for a call, turning its changes into the method's events. */
export type WatchFollow = <T, E>(
  watch: ListWatch<T>,
  view: WatchView<T>,
  from: WatchFrom | undefined,
  ctx: CallContext,
  event: (header: WatchEventHeader, item: T | undefined) => E,
) => AsyncGenerator<E>;

/** Makes the {@link WatchFollow} every WatchService method streams through. */
export function createWatchFollow(deps: WatchFollowDeps): WatchFollow {
  const { quota } = deps;
  /** Runs one watch for a call, turning its changes into the method's events. */
  return async function* follow<T, E>(
    watch: ListWatch<T>,
    view: WatchView<T>,
    from: WatchFrom | undefined,
    ctx: CallContext,
    event: (header: WatchEventHeader, item: T | undefined) => E,
  ): AsyncGenerator<E> {
    const signal =
      deps.closing === undefined ? ctx.signal : AbortSignal.any([ctx.signal, deps.closing]);
    const release = quota.open(ctx);
    try {
      yield* changes();
    } finally {
      release();
    }
    async function* changes(): AsyncGenerator<E> {
      for await (const change of watch.watch(
        view,
        from?.sinceRevision ?? "",
        ctx.scope?.access ?? "",
        signal,
      )) {
        if (change.type === "synced")
          yield event(
            create(WatchEventHeaderSchema, {
              type: WatchEventType.SYNCED,
              revision: change.revision,
              resumed: change.resumed,
            }),
            undefined,
          );
        else yield event(create(WatchEventHeaderSchema, { type: TYPES[change.type] }), change.item);
      }
    }
  };
}

const TYPES = {
  added: WatchEventType.ADDED,
  modified: WatchEventType.MODIFIED,
  deleted: WatchEventType.DELETED,
} as const;
