import { type Clock, type Logger, RpcError, serialKey } from "../core/index.js";
import { type KvStore, mirrorPrefix } from "../store/index.js";

const PREFIX = "pki/revoked/";

/** Revoked certificate serials, in the state store, mirrored in memory for the per-call check. */
export interface Revocations {
  isRevoked(serialHex: string): boolean;
  /** Every revoked serial (as stored) with when it was revoked (ms since the epoch; 0: unknown). */
  revoked(): ReadonlyMap<string, number>;
  /** Called after every change to the list. */
  onChange(listener: () => void): () => void;
  /** Revokes a serial; effective on every daemon sharing the store within moments. */
  revoke(serialHex: string, reason: string, signal?: AbortSignal): Promise<void>;
  close(): void;
}

/** The key under which a serial's revocation is stored (present: revoked). */
export function revokedKey(serialHex: string): string {
  return PREFIX + normalizeSerial(serialHex);
}

/** Serials as stored ({@link serialKey}); anything but 1-40 hex digits is INVALID_ARGUMENT. */
export function normalizeSerial(serialHex: string): string {
  const s = serialKey(serialHex);
  if (!/^[0-9a-f]{1,40}$/.test(s))
    throw new RpcError("INVALID_ARGUMENT", { message: "serial: 1-40 hex digits" });
  return s;
}

/** Loads the revocation list and keeps it current. */
export async function loadRevocations(
  store: KvStore,
  clock: Clock,
  logger: Logger,
): Promise<Revocations> {
  const mirror = await mirrorPrefix(store, PREFIX, (kv) => revokedAtOf(kv.value), logger);
  return {
    isRevoked: (serial) => {
      try {
        return mirror.values().has(normalizeSerial(serial));
      } catch {
        return false;
      }
    },
    revoked: () => mirror.values(),
    async revoke(serial, reason, signal) {
      const record = JSON.stringify({ revokedAtMs: clock.now(), reason: reason.slice(0, 256) });
      await store.put(PREFIX + normalizeSerial(serial), new TextEncoder().encode(record), {
        signal,
      });
    },
    onChange: (listener) => mirror.onChange(listener),
    close: () => mirror.close(),
  };
}

/** When a stored revocation was made; 0 when its record does not say. */
function revokedAtOf(value: Uint8Array): number {
  try {
    const at = (JSON.parse(new TextDecoder().decode(value)) as { revokedAtMs?: unknown })
      .revokedAtMs;
    return typeof at === "number" && Number.isFinite(at) ? at : 0;
  } catch {
    return 0;
  }
}
