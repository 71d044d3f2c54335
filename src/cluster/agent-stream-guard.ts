import type { Logger } from "../core/index.js";
import type { AgentPresenceRecord } from "../gen/debvisor/store/v1/agent_presence_records_pb.js";
import type { KvStore } from "../store/index.js";
import type { AgentPresence } from "./agent-presence.js";
import { watchPresence } from "./agent-presence-watch.js";

/** A node's stream held by this process, as the guard sees it. */
export interface GuardedStream {
  /** The store revision of the presence record this stream wrote. */
  readonly presenceRevision: number;
  /** Ends the stream: the node connected to another process since. */
  replace(byServerId: string): void;
}

/** Options of {@link guardStreams}. */
export interface StreamGuardOptions {
  readonly store: KvStore;
  readonly presence: AgentPresence;
  readonly serverId: string;
  readonly signal: AbortSignal;
  readonly logger: Logger;
  /** The node's stream held here, if any. */
  held(nodeId: string): GuardedStream | undefined;
  /** Every stream held here. */
  all(): Iterable<[string, GuardedStream]>;
}

/** One stream between its Hello and its registration. */
export interface OpeningStream {
  /**
   * The stream is registered (held) now; ends it if the node connected to
   * another process after its presence was written and before now.
   */
  registered(stream: GuardedStream): void;
  /** The stream was not registered (its Hello failed). */
  abandoned(): void;
}

/** Guards the rule that a node holds one stream, across control-plane processes. */
export interface StreamGuard {
  /** Called before the stream's presence is written. */
  opening(nodeId: string): OpeningStream;
}

interface Opening {
  /** The latest connection seen for the node while this stream opened. */
  seen?: { record: AgentPresenceRecord; revision: number };
  /** The watch's start count when the stream began opening. */
  readonly starts: number;
}

/**
 * A node holds one stream: one that connects to another control-plane
 * process after a stream's Hello here ends it, as a second stream to this
 * process does. Without this, a stolen node certificate connected to another
 * replica received every operation of the node beside the real agent, whose
 * stream stayed up and noticed nothing.
 *
 * The presence watch shows each connection once. A connection shown while a
 * stream of the node is still opening here is kept for it and judged when it
 * registers, so no stream costs a read of its presence; only one that opened
 * while the watch was not following (at start-up, or down) reads it.
 */
export function guardStreams(options: StreamGuardOptions): StreamGuard {
  const { logger: log, serverId } = options;
  const opening = new Map<string, Set<Opening>>();
  /** How often the watch started; a stream that opened across a start reads its presence. */
  let starts = 0;

  const endIfElsewhere = (
    nodeId: string,
    s: GuardedStream,
    record: AgentPresenceRecord,
    revision: number,
  ) => {
    if (record.serverId === serverId) return;
    if (s.presenceRevision === 0 || revision <= s.presenceRevision) return;
    log.info(
      { node: nodeId, by: record.serverId },
      "agent connected to another control-plane process; its stream here ends",
    );
    s.replace(record.serverId);
  };

  /** Reads the node's stored presence: connections the watch did not show. */
  const check = async (nodeId: string, s: GuardedStream) => {
    try {
      const stored = await options.presence.current(nodeId, options.signal);
      if (stored !== undefined && options.held(nodeId) === s)
        endIfElsewhere(nodeId, s, stored.message, stored.modRevision);
    } catch (err) {
      log.warn({ err, node: nodeId }, "agent presence not read");
    }
  };

  watchPresence({
    store: options.store,
    signal: options.signal,
    logger: log,
    wanted: (nodeId) => opening.has(nodeId) || options.held(nodeId) !== undefined,
    onConnected: (nodeId, record, revision) => {
      for (const o of opening.get(nodeId) ?? [])
        if (o.seen === undefined || revision > o.seen.revision) o.seen = { record, revision };
      const s = options.held(nodeId);
      if (s !== undefined) endIfElsewhere(nodeId, s, record, revision);
    },
    onWatching: () => {
      starts++;
      for (const [nodeId, s] of options.all()) void check(nodeId, s);
    },
  });

  return {
    opening(nodeId) {
      const o: Opening = { starts };
      const set = opening.get(nodeId) ?? new Set<Opening>();
      opening.set(nodeId, set);
      set.add(o);
      const forget = () => {
        set.delete(o);
        if (set.size === 0 && opening.get(nodeId) === set) opening.delete(nodeId);
      };
      return {
        registered(stream) {
          forget();
          if (o.starts !== starts) void check(nodeId, stream);
          else if (o.seen !== undefined)
            endIfElsewhere(nodeId, stream, o.seen.record, o.seen.revision);
        },
        abandoned: forget,
      };
    },
  };
}
