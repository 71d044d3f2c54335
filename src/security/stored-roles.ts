import { create } from "@bufbuild/protobuf";
import { type Clock, type Logger, RpcError } from "../core/index.js";
import { type RoleRecord, RoleRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { decodeMessage, encodeMessage, type KvStore, mirrorPrefix } from "../store/index.js";

const PREFIX = "rbac/roles/";

/** Custom roles set through the API, kept in the state store and mirrored in memory. */
export interface StoredRoles {
  all(): readonly RoleRecord[];
  set(
    name: string,
    grants: readonly string[],
    setBy: string,
    signal?: AbortSignal,
  ): Promise<RoleRecord>;
  remove(name: string, signal?: AbortSignal): Promise<void>;
  onChange(listener: () => void): void;
  close(): void;
}

/** Loads the stored roles and keeps them current (see mirrorPrefix). */
export async function loadStoredRoles(
  store: KvStore,
  clock: Clock,
  logger: Logger,
): Promise<StoredRoles> {
  const mirror = await mirrorPrefix(
    store,
    PREFIX,
    (kv) => decodeMessage(RoleRecordSchema, kv),
    logger,
  );
  return {
    all: () => [...mirror.values().values()],
    async set(name, grants, setBy, signal) {
      const record = create(RoleRecordSchema, {
        name,
        grants: [...grants],
        setBy,
        setAtMs: BigInt(clock.now()),
      });
      await store.put(PREFIX + name, encodeMessage(RoleRecordSchema, record), { signal });
      return record;
    },
    async remove(name, signal) {
      if (!(await store.delete(PREFIX + name, { signal })).deleted)
        throw new RpcError("ROLE_NOT_FOUND");
    },
    onChange: (l) => mirror.onChange(l),
    close: () => mirror.close(),
  };
}
