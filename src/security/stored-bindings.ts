import { create } from "@bufbuild/protobuf";
import { type Clock, type Logger, RpcError } from "../core/index.js";
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
      const present = keys.filter((k) => mirror.values().has(k.slice(PREFIX.length)));
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

/** Tenant names kept as they are in a binding's key; any other is encoded (see tenantSegment). */
const PLAIN_TENANT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** Control characters (C0, DEL, C1): no tenant name holds one. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it finds
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/** The store key of a principal's binding in a tenant ("": cluster-wide); keys are printable ASCII. */
function keyOf(principal: string, tenant: string): string {
  assertPrincipalName(principal);
  return `${PREFIX}${tenant === "" ? CLUSTER : tenantSegment(tenant)}/${principal}`;
}

/**
 * A tenant's key segment. A stored binding takes any tenant a config
 * binding, a VM or an API key can name (1 to 64 characters, none of them a
 * control character), so that every tenant can be bound through the API.
 * Names of letters, digits, '.', '_' and '-' starting with a letter or
 * digit are their own segment, as before; any other is `~` and its UTF-8
 * in base64url, which no plain name (nor `_cluster`) can be.
 */
function tenantSegment(tenant: string): string {
  if (PLAIN_TENANT.test(tenant)) return tenant;
  if (tenant.length > 64 || CONTROL.test(tenant))
    throw new RpcError("INVALID_ARGUMENT", {
      message: "tenant: at most 64 characters, none of them a control character",
    });
  return `~${Buffer.from(tenant, "utf8").toString("base64url")}`;
}
