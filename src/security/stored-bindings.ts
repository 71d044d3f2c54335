import { create } from "@bufbuild/protobuf";
import { type Clock, type Logger, RpcError } from "../core/index.js";
import { type BindingRecord, BindingRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { decodeMessage, encodeMessage, type KvStore, mirrorPrefix } from "../store/index.js";
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

/** Loads the stored bindings and keeps them current (see mirrorPrefix). */
export async function loadStoredBindings(
  store: KvStore,
  clock: Clock,
  logger: Logger,
): Promise<StoredBindings> {
  const mirror = await mirrorPrefix(
    store,
    PREFIX,
    (kv) => decodeMessage(BindingRecordSchema, kv),
    logger,
  );
  return {
    all: () => [...mirror.values().values()],
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
    onChange: (l) => mirror.onChange(l),
    close: () => mirror.close(),
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
