import { type ChildProcess, execFile, spawn } from "node:child_process";
import {
  closeSync,
  existsSync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  openSync,
  readSync,
  renameSync,
  writeFileSync,
} from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import { type Clock, type Logger, RpcError, systemClock } from "../core/index.js";
import { type AuditFields, type AuditRecord, chainHash, recordLine } from "./audit-record.js";

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
  close(): Promise<void>;
}

/** After a failed write, calls are refused without trying for this long. */
const RETRY_AFTER_MS = 1000;

interface Pending {
  readonly fields: AuditFields;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

/**
 * Opens (creating, 0600) the audit file. A torn last line left by a crash is
 * moved aside to `<path>.torn-<time>` and a recovery record continues the
 * chain, so the file always verifies.
 */
export async function openAuditLog(options: AuditLogOptions): Promise<AuditLog> {
  const clock = options.clock ?? systemClock;
  const log = options.logger.child({ audit: options.path });
  const maxBytes = options.maxBytes ?? 100 * 1024 * 1024;
  const maxAgeMs = options.maxAgeMs ?? 86_400_000;
  const alarm = options.alarm ?? syslogAlarm(log);
  const recovered = recover(options.path, clock);
  // The copy is repaired the same way; a torn tail there must not glue onto new records.
  if (options.copyPath !== undefined) recover(options.copyPath, clock);
  let seq = recovered.seq;
  let lastHash = recovered.hash;
  let handle: FileHandle = await open(options.path, "a", 0o600);
  let copy: FileHandle | undefined =
    options.copyPath === undefined ? undefined : await open(options.copyPath, "a", 0o600);
  let copySize = copy === undefined ? 0 : (await copy.stat()).size;
  const syslog = options.forwardToSyslog ? createSyslogForwarder(log) : undefined;
  let size = recovered.size;
  let openedAt = clock.now();
  let queue: Pending[] = [];
  let writing = false;
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

  const rotateIfDue = async () => {
    if (size < maxBytes && clock.now() - openedAt < maxAgeMs) return;
    const stamp = new Date(clock.now()).toISOString().replace(/[:.]/g, "-");
    // Rename first, with the file still open: if the rename fails, nothing is
    // closed and writing goes on in the current file (rotation is retried later).
    try {
      renameSync(options.path, freeName(`${options.path}.${stamp}`));
    } catch (err) {
      log.warn({ err }, "audit rotation failed; writing on in the current file");
      openedAt = clock.now();
      return;
    }
    const next = await open(options.path, "a", 0o600);
    await handle.close();
    handle = next;
    size = 0;
    if (copy !== undefined && options.copyPath !== undefined) {
      try {
        renameSync(options.copyPath, freeName(`${options.copyPath}.${stamp}`));
        const nextCopy = await open(options.copyPath, "a", 0o600);
        await copy.close();
        copy = nextCopy;
        copySize = 0;
      } catch (err) {
        log.warn({ err }, "audit copy rotation failed; writing on in the current copy");
      }
    }
    openedAt = clock.now();
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
      try {
        await rotateIfDue();
        const writeAll = async (h: FileHandle, at: number) => {
          if (failing) await h.truncate(at); // drop whatever a failed write left behind
          let off = 0;
          while (off < buf.length) off += (await h.write(buf, off, buf.length - off)).bytesWritten;
          await h.sync();
        };
        const syncStart = performance.now();
        // Wait for both writes to end either way, so a retry never overlaps a write still running.
        const results = await Promise.allSettled([
          writeAll(handle, size),
          ...(copy === undefined ? [] : [writeAll(copy, copySize)]),
        ]);
        const failed = results.find((r) => r.status === "rejected");
        if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
        options.onSync?.(performance.now() - syncStart);
      } catch (err) {
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
      if (failing) log.warn({}, "audit trail writable again");
      failing = false;
      seq = s;
      lastHash = prev;
      size += buf.length;
      copySize += copy === undefined ? 0 : buf.length;
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
      queue.push({ fields, resolve, reject });
      if (!writing) void flush();
    });

  const empty = {
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
  await append({
    ...empty,
    event: recovered.tornFile === undefined ? "audit.start" : "audit.recovered",
    reason:
      recovered.tornFile === undefined
        ? ""
        : `torn last line (${recovered.tornBytes} bytes) moved to ${recovered.tornFile}`,
  });
  if (recovered.tornFile !== undefined)
    log.warn({ tornFile: recovered.tornFile }, "audit trail: repaired a torn last line");

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
    async close() {
      while (writing || queue.length > 0) await new Promise((r) => setTimeout(r, 5));
      await handle.close();
      await copy?.close();
    },
  };
}

/** Reads the end of an existing file: the last record's seq and hash, and a torn tail (moved aside). */
function recover(
  path: string,
  clock: Clock,
): { seq: number; hash: string; size: number; tornFile?: string; tornBytes?: number } {
  let fd: number;
  try {
    fd = openSync(path, "r+");
  } catch {
    return { seq: 0, hash: "", size: 0 };
  }
  try {
    const size = fstatSync(fd).size;
    const tailLen = Math.min(size, 1024 * 1024);
    const tail = Buffer.alloc(tailLen);
    readSync(fd, tail, 0, tailLen, size - tailLen);
    let end = tail.lastIndexOf(0x0a) + 1; // bytes of tail up to and including the last newline
    let lastLine: string | undefined;
    // Walk back over a complete but unparseable last line too: it is torn all the same.
    for (let guard = 0; guard < 2 && end > 0; guard++) {
      const start = tail.lastIndexOf(0x0a, end - 2) + 1;
      const line = tail.subarray(start, end - 1).toString();
      try {
        const r = JSON.parse(line) as { seq?: unknown; hash?: unknown };
        if (typeof r.seq === "number" && typeof r.hash === "string") {
          lastLine = line;
          break;
        }
      } catch {}
      end = start;
    }
    const good = size - tailLen + end;
    let tornFile: string | undefined;
    if (good < size) {
      tornFile = `${path}.torn-${new Date(clock.now()).toISOString().replace(/[:.]/g, "-")}`;
      writeFileSync(tornFile, tail.subarray(end), { mode: 0o600 });
      ftruncateSync(fd, good);
      fsyncSync(fd);
    }
    if (lastLine === undefined)
      return { seq: 0, hash: "", size: good, tornFile, tornBytes: size - good };
    const r = JSON.parse(lastLine) as { seq: number; hash: string };
    return { seq: r.seq, hash: r.hash, size: good, tornFile, tornBytes: size - good };
  } finally {
    closeSync(fd);
  }
}

/**
 * Sends lines to syslog through one long-lived `logger -t debvisor-audit`
 * reading stdin; restarted (at most once a second) if it dies. Best effort:
 * the file is the record, syslog the off-box copy.
 */
function createSyslogForwarder(log: Logger): (line: string) => void {
  let child: ChildProcess | undefined;
  let lastStart = 0;
  const start = () => {
    lastStart = Date.now();
    const c = spawn("logger", ["-t", "debvisor-audit", "-p", "auth.info"], {
      stdio: ["pipe", "ignore", "ignore"],
    });
    c.on("error", (err) => log.warn({ err }, "audit syslog forwarder failed"));
    c.stdin?.on("error", () => {});
    c.once("exit", () => {
      if (child === c) child = undefined;
    });
    c.unref();
    child = c;
  };
  return (line) => {
    if (child === undefined && Date.now() - lastStart > 1000) start();
    child?.stdin?.write(line);
  };
}

/** The original design's fallback: a line to syslog through util-linux `logger`. */
function syslogAlarm(log: Logger): (message: string) => void {
  return (message) => {
    execFile(
      "logger",
      ["-t", "debvisor-rpcd", "-p", "auth.crit", message],
      { timeout: 5000 },
      (err) => {
        if (err) log.warn({ err }, "could not send the audit alarm to syslog");
      },
    );
  };
}

/**
 * `base`, or `base-0001`, `base-0002`... when a file of that name exists: two
 * rotations in one millisecond (a burst of large records) would otherwise
 * rename the second file over the first, losing its records. The names
 * still sort in the order they were written (`audit.log.*` in a shell).
 */
function freeName(base: string): string {
  let name = base;
  for (let n = 1; existsSync(name); n++) name = `${base}-${String(n).padStart(4, "0")}`;
  return name;
}
