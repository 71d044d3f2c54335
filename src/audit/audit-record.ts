import { createHash, createHmac } from "node:crypto";

/** One line of the audit trail. Field order is fixed: it is part of the hash. */
export interface AuditRecord {
  /** ISO time the record was written. */
  readonly ts: string;
  /** Position in the chain, 1 for the first record ever. */
  readonly seq: number;
  /** rpc (a call's outcome), rpc.request (a mutating call, before it acts), or audit.* lifecycle events. */
  readonly event: string;
  readonly requestId: string;
  readonly principal: string;
  readonly authMethod: string;
  /** API key id (never the secret). */
  readonly keyId: string;
  readonly tenant: string;
  readonly peer: string;
  readonly service: string;
  readonly method: string;
  readonly permission: string;
  /** allow, deny, unauthenticated, or empty. */
  readonly decision: string;
  /** The deciding rule or the failure's reason, for operators. */
  readonly reason: string;
  /** Redacted summary of the request, at most 200 characters. */
  readonly args: string;
  /** gRPC code name, or empty for a request record. */
  readonly code: string;
  /** The client-safe error text. */
  readonly error: string;
  readonly durationMs: number;
  /** Hash of the previous record ("" for the first). */
  readonly prev: string;
  /** SHA-256 (or HMAC-SHA256 with the configured key) of prev and this record without `hash`. */
  readonly hash: string;
}

/** A record before it is chained. */
export type AuditFields = Omit<AuditRecord, "ts" | "seq" | "prev" | "hash">;

const ORDER: (keyof AuditRecord)[] = [
  "ts",
  "seq",
  "event",
  "requestId",
  "principal",
  "authMethod",
  "keyId",
  "tenant",
  "peer",
  "service",
  "method",
  "permission",
  "decision",
  "reason",
  "args",
  "code",
  "error",
  "durationMs",
  "prev",
];

/** The canonical encoding the hash covers: the fields in fixed order, JSON, without `hash`. */
export function canonical(record: Omit<AuditRecord, "hash">): string {
  return JSON.stringify(ORDER.map((k) => record[k as keyof typeof record]));
}

/** The chain hash of a record: keyed when a key is configured, so the chain cannot be rebuilt without it. */
export function chainHash(record: Omit<AuditRecord, "hash">, key: Buffer | undefined): string {
  const h = key === undefined ? createHash("sha256") : createHmac("sha256", key);
  return h.update(record.prev).update("\n").update(canonical(record)).digest("hex");
}

/** The JSON line of a record, `hash` last. */
export function recordLine(record: AuditRecord): string {
  const out: Record<string, unknown> = {};
  for (const k of ORDER) out[k] = record[k];
  out.hash = record.hash;
  return `${JSON.stringify(out)}\n`;
}
