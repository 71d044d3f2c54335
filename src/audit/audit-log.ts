// The durable, hash-chained audit trail: records chained and group-committed
// (written and fsynced to the file and its copy before they are
// acknowledged), fail-closed while the files cannot be written.

import { setTimeout as sleep } from "node:timers/promises";
import { type Clock, type Logger, RpcError, systemClock } from "../core/index.js";
import { openAuditFiles } from "./audit-files.js";
import { type AuditFields, type AuditRecord, chainHash, recordLine } from "./audit-record.js";
import { recoverAuditTrail } from "./recover-audit-trail.js";
import { createSyslogForwarder, syslogAlarm } from "./syslog-forwarder.js";

/** Options of {@link openAuditLog}. */
export interface AuditLogOptions {
  readonly path: string;
  /** HMAC key: without it, anyone who can write the file can rebuild the chain. */
  readonly hmacKey?: Buffer;
  /** Rotate when the file grows past this (default 100 MiB)... */
  readonly maxBytes?: number;
  /** ...or gets older than this (default 24 h). */
  readonly maxAgeMs?: number;
  readonly logger: Logger;
  readonly clock?: Clock;
  /** Where to send a loud line when writing fails (default: `logger -p auth.crit`, the design's syslog fallback). */
  readonly alarm?: (message: string) => void;
  /**
   * A second file, ideally on another disk, written and fsynced with the
   * main one: a record is acknowledged only when both hold it, so deleting
   * the newest records from one copy shows against the other.
   */
  readonly copyPath?: string;
  /** Also send every durable record to syslog (best effort, through one long-lived logger(1) process). */
  readonly forwardToSyslog?: boolean;
  /** Called after each successful write and fsync of a group of records, with how long it took. */
  readonly onSync?: (durationMs: number) => void;
}

/** Counters for metrics and the benchmark. */
export interface AuditStats {
  readonly records: number;
  readonly syncs: number;
  readonly failing: boolean;
  readonly failures: number;
}

/** The durable, hash-chained audit trail. */
export interface AuditLog {
  /**
   * Appends a record and resolves once it is on stable storage (written and
   * fsynced). Records queued while a sync runs share the next write and
   * fsync (group commit). Rejects with AUDIT_UNAVAILABLE when the file cannot
   * be written; the chain then continues from the last durable record.
   */
  append(fields: AuditFields): Promise<void>;
  /** True for a moment after a failed write (callers refuse up front); then the next write is tried. */
  failing(): boolean;
  stats(): AuditStats;
  /** The file being written. */
  readonly path: string;
  /** Calls `listener` with every record once it is durable; returns the unsubscribe function. */
  subscribe(listener: (record: AuditRecord) => void): () => void;
  /**
   * Writes what is queued and closes the files, within AUDIT_CLOSE_TIMEOUT_MS:
   * a record still not durable then (a hung disk) fails with
   * AUDIT_UNAVAILABLE. Later appends fail the same way.
   */
  close(): Promise<void>;
}

/** close() waits this long for writes in flight; what is still pending then fails as not written. */
export const AUDIT_CLOSE_TIMEOUT_MS = 5000;

/** After a failed write, calls are refused without trying for this long. */
const RETRY_AFTER_MS = 1000;

/** The fields of a record that is no call (start, recovery). */
const NO_CALL = {
  requestId: "",
  principal: "",
  authMethod: "",
  keyId: "",
  tenant: "",
  peer: "",
  service: "",
  method: "",
  permission: "",
  decision: "",
  args: "",
  code: "",
  error: "",
  durationMs: 0,
};

interface Pending {
  readonly fields: AuditFields;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

/**
 * Opens (creating, 0600) the audit file. A torn tail left by a crash (a
 * torn last line, or a last group torn in its middle and the records after
 * the tear) is moved aside to `<path>.torn-<time>` and a recovery record
 * continues the chain, so the file always verifies.
 */
export async function openAuditLog(options: AuditLogOptions): Promise<AuditLog> {
  const clock = options.clock ?? systemClock;
  const log = options.logger.child({ audit: options.path });
  const maxBytes = options.maxBytes ?? 100 * 1024 * 1024;
  const maxAgeMs = options.maxAgeMs ?? 86_400_000;
  const alarm = options.alarm ?? syslogAlarm(log);
  const { recovered, repairs } = recoverAuditTrail(options, clock, log);
  let seq = recovered.seq;
  let lastHash = recovered.hash;
  const files = await openAuditFiles({
    path: options.path,
    copyPath: options.copyPath,
    size: recovered.size,
    maxBytes,
    maxAgeMs,
    clock,
    log,
  });
  const syslog = options.forwardToSyslog ? createSyslogForwarder(log) : undefined;
  let queue: Pending[] = [];
  let writing = false;
  let closed = false;
  /** The batch being written (close() fails it when the write hangs). */
  let inFlight: Pending[] = [];
  let failing = false;
  let records = 0;
  let syncs = 0;
  let failures = 0;
  let lastAlarm = 0;
  let lastFailure = 0;
  const listeners = new Set<(record: AuditRecord) => void>();

  const chain = (fields: AuditFields, s: number, prev: string): AuditRecord => {
    const unhashed = { ts: new Date(clock.now()).toISOString(), seq: s, ...fields, prev };
    return { ...unhashed, hash: chainHash(unhashed, options.hmacKey) };
  };

  const flush = async () => {
    writing = true;
    while (queue.length > 0) {
      const batch = queue;
      queue = [];
      // Chain the batch from the last durable record; nothing is kept if the write fails.
      let s = seq;
      let prev = lastHash;
      const lines: string[] = [];
      const recs: AuditRecord[] = [];
      for (const p of batch) {
        const r = chain(p.fields, ++s, prev);
        prev = r.hash;
        recs.push(r);
        lines.push(recordLine(r));
      }
      const buf = Buffer.from(lines.join(""));
      inFlight = batch;
      try {
        await files.rotateIfDue();
        const syncStart = performance.now();
        await files.write(buf, failing);
        options.onSync?.(performance.now() - syncStart);
      } catch (err) {
        inFlight = [];
        failures++;
        lastFailure = clock.now();
        if (!failing)
          log.error({ err }, "AUDIT TRAIL CANNOT BE WRITTEN: refusing calls until it can");
        failing = true;
        const now = clock.now();
        if (now - lastAlarm > 10_000) {
          lastAlarm = now;
          alarm(
            `debvisor-rpcd: audit trail ${options.path} cannot be written (${(err as Error).message}); calls are refused`,
          );
        }
        const refused = new RpcError("AUDIT_UNAVAILABLE", { cause: err });
        for (const p of batch) p.reject(refused);
        continue;
      }
      inFlight = [];
      if (failing) log.warn({}, "audit trail writable again");
      failing = false;
      seq = s;
      lastHash = prev;
      files.advance(buf.length);
      if (syslog !== undefined) for (const line of lines) syslog(line);
      records += batch.length;
      syncs++;
      for (const p of batch) p.resolve();
      for (const l of listeners) for (const r of recs) l(r);
    }
    writing = false;
  };

  const append = (fields: AuditFields) =>
    new Promise<void>((resolve, reject) => {
      if (closed) {
        reject(new RpcError("AUDIT_UNAVAILABLE", { cause: new Error("audit trail closed") }));
        return;
      }
      queue.push({ fields, resolve, reject });
      if (!writing) void flush();
    });

  await append({
    ...NO_CALL,
    event: repairs.length === 0 ? "audit.start" : "audit.recovered",
    reason: repairs.join("; "),
  });
  if (repairs.length > 0) log.warn({ repairs }, "audit trail: repaired after a crash");

  return {
    append,
    // Refuse up front for a second after a failure, then let the next call try
    // a real write: that is how writing resumes once space returns.
    failing: () => failing && clock.now() - lastFailure < RETRY_AFTER_MS,
    stats: () => ({ records, syncs, failing, failures }),
    path: options.path,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    // Bounded: a write hung on a dead disk must not hold shutdown forever.
    // What is still pending then fails (it may yet reach the file, but no
    // caller was told it did).
    async close() {
      closed = true;
      const end = performance.now() + AUDIT_CLOSE_TIMEOUT_MS;
      while ((writing || queue.length > 0) && performance.now() < end) await sleep(5);
      const pending = writing || queue.length > 0 ? [...inFlight, ...queue.splice(0)] : [];
      if (pending.length > 0) {
        log.error(
          { pending: pending.length, timeoutMs: AUDIT_CLOSE_TIMEOUT_MS },
          "audit trail closed with writes still pending; they fail as not written",
        );
        const refused = new RpcError("AUDIT_UNAVAILABLE", {
          cause: new Error(`write still pending ${AUDIT_CLOSE_TIMEOUT_MS} ms after close()`),
        });
        for (const p of pending) p.reject(refused);
      }
      const left = Math.max(0, end - performance.now());
      await Promise.race([files.close(), sleep(left, undefined, { ref: false })]);
    },
  };
}
