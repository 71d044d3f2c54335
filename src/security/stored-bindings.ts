import { create } from "@bufbuild/protobuf";
import {
  assertTenantName,
  type Clock,
  type Logger,
  RpcError,
  tenantKeySegment,
} from "../core/index.js";
import { type BindingRecord, BindingRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { decodeMessage, encodeMessage, type KvStore, mirrorPrefix } from "../store/index.js";
import type { Binding } from "./access-evaluator.js";
import { assertPrincipalName } from "./principal-names.js";

const PREFIX = "rbac/bindings/";
/** The key segment of cluster-wide bindings; no tenant may be called this. */
const CLUSTER = "_cluster";

/**
 * Bindings set through the API, kept in the state store and mirrored in
 * memory: one record per principal and tenant, under
 * `rbac/bindings/<tenant or _cluster>/<principal>`. Records written by
 * earlier versions (`rbac/bindings/<principal>`, one per principal) still
 * count as the binding of the tenant they name (cluster-wide when none);
 * setting or removing that binding replaces them.
 */
export interface StoredBindings {
  /** Current bindings; changes made by any daemon sharing the store show up within moments. */
  all(): readonly BindingRecord[];
  /** Sets (replaces) the principal's binding in `binding.tenant` (undefined: cluster-wide). */
  set(binding: Binding, setBy: string, signal?: AbortSignal): Promise<BindingRecord>;
  /** Removes the principal's binding in `tenant` (undefined: cluster-wide); BINDING_NOT_FOUND when none. */
  remove(principal: string, tenant: string | undefined, signal?: AbortSignal): Promise<void>;
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
  /** Keys of earlier versions' records for this principal and tenant. */
  const legacyKeys = (principal: string, tenant: string) =>
    [...mirror.values().entries()]
      .filter(([key, r]) => key === principal && r.principal === principal && r.tenant === tenant)
      .map(([key]) => PREFIX + key);
  /** Whether `key` is free or holds this principal's binding in this tenant (not another's record). */
  const holds = (key: string, principal: string, tenant: string) => {
    const r = mirror.values().get(key.slice(PREFIX.length));
    return r === undefined || (r.principal === principal && r.tenant === tenant);
  };
  return {
    all: () => [...mirror.values().values()],
    async set(binding, setBy, signal) {
      const tenant = binding.tenant ?? "";
      const record = create(BindingRecordSchema, {
        principal: binding.principal,
        roles: [...binding.roles],
        tenant,
        setBy,
        setAtMs: BigInt(clock.now()),
      });
      const key = keyOf(binding.principal, tenant);
      // An earlier version's record of another principal sits at this key (principal
      // "acme/bob"'s, where bob's binding in acme goes): never replaced, nor moved from
      // here (a copy of the records that lags the store would move back one just removed).
      if (!holds(key, binding.principal, tenant))
        throw new RpcError("CONFLICT", {
          message: `an earlier version's binding of principal ${key.slice(PREFIX.length)} is stored where this one goes: set that principal's binding again first (it moves to its own key)`,
        });
      await store.txn(
        {
          compares: [],
          success: [
            { type: "put", key, value: encodeMessage(BindingRecordSchema, record) },
            ...legacyKeys(binding.principal, tenant)
              .filter((k) => k !== key)
              .map((k) => ({ type: "delete" as const, key: k })),
          ],
        },
        { signal },
      );
      return record;
    },
    async remove(principal, tenant, signal) {
      const key = keyOf(principal, tenant ?? "");
      const keys = [key, ...legacyKeys(principal, tenant ?? "").filter((k) => k !== key)];
      const present = keys.filter(
        (k) => mirror.values().has(k.slice(PREFIX.length)) && holds(k, principal, tenant ?? ""),
      );
      if (present.length === 0) throw new RpcError("BINDING_NOT_FOUND");
      await store.txn(
        { compares: [], success: present.map((k) => ({ type: "delete" as const, key: k })) },
        { signal },
      );
    },
    onChange: (l) => mirror.onChange(l),
    close: () => mirror.close(),
  };
}

/** The store key of a principal's binding in a tenant ("": cluster-wide); keys are printable ASCII. */
function keyOf(principal: string, tenant: string): string {
  assertPrincipalName(principal);
  if (tenant === "") return `${PREFIX}${CLUSTER}/${principal}`;
  assertTenantName(tenant);
  return `${PREFIX}${tenantKeySegment(tenant)}/${principal}`;
}
