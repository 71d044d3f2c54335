import { create } from "@bufbuild/protobuf";
import { type Clock, type Logger, RpcError } from "../core/index.js";
import { type BindingRecord, BindingRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { decodeMessage, encodeMessage, type KvStore, rangeAll } from "../store/index.js";
import type { Binding } from "./access-evaluator.js";

const PREFIX = "rbac/bindings/";

/** Bindings set through the API, kept in the state store and mirrored in memory. */
export interface StoredBindings {
  /** Current bindings; changes made by any daemon sharing the store show up within moments. */
  all(): readonly BindingRecord[];
  set(binding: Binding, setBy: string, signal?: AbortSignal): Promise<BindingRecord>;
  remove(principal: string, signal?: AbortSignal): Promise<void>;
  /** Called after each change, to rebuild the policy. */
  onChange(listener: () => void): void;
  close(): void;
}

/**
 * Loads the stored bindings, then follows the store from the revision it read
 * at, so no change falls between the load and the watch. If the watch fails
 * (store restarted, history compacted) it reloads and watches again.
 */
export async function loadStoredBindings(
  store: KvStore,
  clock: Clock,
  logger: Logger,
): Promise<StoredBindings> {
  const byPrincipal = new Map<string, BindingRecord>();
  const listeners: (() => void)[] = [];
  const stop = new AbortController();
  const changed = () => {
    for (const l of listeners) l();
  };
  const load = async () => {
    const revision = await store.revision();
    byPrincipal.clear();
    for await (const kv of rangeAll(store, PREFIX)) {
      const b = decodeMessage(BindingRecordSchema, kv);
      byPrincipal.set(b.principal, b);
    }
    return revision;
  };
  const follow = async (from: number) => {
    let next = from;
    while (!stop.signal.aborted) {
      try {
        for await (const e of store.watch(PREFIX, next, { signal: stop.signal })) {
          const principal = e.key.slice(PREFIX.length);
          if (e.type === "delete") byPrincipal.delete(principal);
          else
            byPrincipal.set(
              principal,
              decodeMessage(BindingRecordSchema, {
                key: e.key,
                value: e.value,
                createRevision: 0,
                modRevision: e.revision,
                version: 0,
                lease: undefined,
              }),
            );
          next = e.revision + 1;
          changed();
        }
      } catch (err) {
        if (stop.signal.aborted) return;
        logger.warn({ err }, "binding watch ended; reloading bindings");
        await new Promise((r) => setTimeout(r, 1000).unref());
        try {
          next = (await load()) + 1;
          changed();
        } catch (loadErr) {
          logger.error(
            { err: loadErr },
            "reloading bindings failed; keeping the last known bindings",
          );
        }
      }
    }
  };
  const start = await load();
  void follow(start + 1);
  return {
    all: () => [...byPrincipal.values()],
    async set(binding, setBy, signal) {
      const record = create(BindingRecordSchema, {
        principal: binding.principal,
        roles: [...binding.roles],
        tenant: binding.tenant ?? "",
        setBy,
        setAtMs: BigInt(clock.now()),
      });
      await store.put(
        PREFIX + encodeKey(binding.principal),
        encodeMessage(BindingRecordSchema, record),
        { signal },
      );
      return record;
    },
    async remove(principal, signal) {
      const r = await store.delete(PREFIX + encodeKey(principal), { signal });
      if (!r.deleted) throw new RpcError("BINDING_NOT_FOUND");
    },
    onChange: (l) => listeners.push(l),
    close: () => stop.abort(),
  };
}

/** Principals become store keys as themselves when they are plain; keys are printable ASCII. */
function encodeKey(principal: string): string {
  if (!/^[\x21-\x7e]{1,256}$/.test(principal))
    throw new RpcError("INVALID_ARGUMENT", {
      message: "principal: printable ASCII, 1-256 characters",
    });
  return principal;
}
