import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "../core/index.js";
import {
  type AgentPresenceRecord,
  AgentPresenceRecordSchema,
} from "../gen/debvisor/store/v1/agent_presence_records_pb.js";
import { decodeMessage, type KvStore, keyValueOf } from "../store/index.js";
import { AGENTS_PREFIX } from "./agent-presence.js";

/** The pause before a lost watch resumes. */
const RESUME_PAUSE_MS = 1000;

/** Options of {@link watchPresence}. */
export interface PresenceWatchOptions {
  readonly store: KvStore;
  readonly signal: AbortSignal;
  readonly logger: Logger;
  /** Whether the node's records matter here (only those are decoded). */
  wanted(nodeId: string): boolean;
  /** A wanted node's agent connected (to this or another control-plane process). */
  onConnected(nodeId: string, record: AgentPresenceRecord, modRevision: number): void;
  /**
   * The watch starts or resumes after a failure: records written before now
   * were not shown (those written from now on are).
   */
  onWatching(): void;
}

/**
 * Follows the agents' presence records (agents/<node>) from now on, so a
 * process holding a node's stream learns that the node connected to
 * another process. A watch that fails resumes from the current revision,
 * and `onWatching` says when (it reads what the watch did not show).
 */
export function watchPresence(options: PresenceWatchOptions): void {
  const { store, signal, logger } = options;
  const follow = async () => {
    while (!signal.aborted) {
      try {
        const from = (await store.revision({ signal })) + 1;
        options.onWatching();
        for await (const e of store.watch(AGENTS_PREFIX, from, { signal })) {
          const nodeId = e.key.slice(AGENTS_PREFIX.length);
          if (e.type !== "put" || !options.wanted(nodeId)) continue;
          let record: AgentPresenceRecord;
          try {
            record = decodeMessage(AgentPresenceRecordSchema, keyValueOf(e));
          } catch (err) {
            logger.error({ err, key: e.key }, "undecodable agent presence record skipped");
            continue;
          }
          options.onConnected(nodeId, record, e.revision);
        }
      } catch (err) {
        if (signal.aborted) break;
        logger.warn({ err }, "agent presence watch ended; resuming");
        await sleep(RESUME_PAUSE_MS, undefined, { signal, ref: false }).catch(() => {});
      }
    }
  };
  void follow();
}
