import { randomBytes } from "node:crypto";
import { sourceGroupOf } from "../security/index.js";

/** Bounds of {@link createPendingFlows}. */
export interface PendingFlowLimits {
  /** How long a flow lives unless used. */
  readonly ttlMs: number;
  /** Flows one source group (an IPv4 address, an IPv6 /64) may have pending at once. */
  readonly perSource: number;
  /** Flows pending at once in all. */
  readonly total: number;
}

/** A pending flow as kept. */
export interface PendingFlow<T> {
  readonly value: T;
  readonly expiresAtMs: number;
}

/** Why {@link PendingFlows.add} kept nothing: the source's share or the whole table is full. */
export type PendingRefusal = { refused: "source" | "total"; group: string; pending: number };

/** Sign-ins in progress, by a random id, bounded per source group and in all. */
export interface PendingFlows<T> {
  /** Keeps `value` under a new random id for the TTL, unless a bound is reached. */
  add(source: string, value: T): { id: string } | PendingRefusal;
  /** The flow under `id` (perhaps past its expiry: the caller says so), or undefined. */
  get(id: string): PendingFlow<T> | undefined;
  /** Forgets a flow (used, or expired), freeing its source's share. */
  delete(id: string): void;
  size(): number;
}

/**
 * Creates the table of sign-ins in progress. Flows expire oldest first (all
 * live equally long, so insertion order is expiry order) and are swept on
 * each `add`; a source group at its share, or a full table, is refused
 * rather than making room by dropping someone else's sign-in.
 */
export function createPendingFlows<T>(
  now: () => number,
  limits: PendingFlowLimits,
): PendingFlows<T> {
  const flows = new Map<string, PendingFlow<T> & { readonly group: string }>();
  const perGroup = new Map<string, number>();
  const forget = (id: string) => {
    const f = flows.get(id);
    if (f === undefined) return;
    flows.delete(id);
    const n = (perGroup.get(f.group) ?? 1) - 1;
    if (n > 0) perGroup.set(f.group, n);
    else perGroup.delete(f.group);
  };
  return {
    add(source, value) {
      const t = now();
      for (const [id, f] of flows) {
        if (f.expiresAtMs > t) break;
        forget(id);
      }
      const group = sourceGroupOf(source);
      const pending = perGroup.get(group) ?? 0;
      if (pending >= limits.perSource) return { refused: "source", group, pending };
      if (flows.size >= limits.total) return { refused: "total", group, pending: flows.size };
      const id = randomBytes(16).toString("base64url");
      flows.set(id, { value, expiresAtMs: t + limits.ttlMs, group });
      perGroup.set(group, pending + 1);
      return { id };
    },
    get: (id) => flows.get(id),
    delete: forget,
    size: () => flows.size,
  };
}
