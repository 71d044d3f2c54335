import type { MessageInitShape } from "@bufbuild/protobuf";
import { defineService, RpcError, type ServiceBinding, scopeOf } from "../core/index.js";
import {
  type AuditFilter,
  type AuditRecordInfoSchema,
  AuditService,
} from "../gen/debvisor/v1/audit_pb.js";
import { readAuditRecords, readAuditRecordsBackward } from "./audit-file-reader.js";
import type { AuditLog } from "./audit-log.js";
import { createAuditPageTokens } from "./audit-page-token.js";
import type { AuditRecord } from "./audit-record.js";
import { rotatedAuditFiles } from "./rotated-audit-files.js";

/** Dependencies of the AuditService handlers. */
export interface AuditServiceDeps {
  readonly log: AuditLog;
  /** Aborted when the daemon shuts down: open follow streams end so draining is not held up. */
  readonly closing: AbortSignal;
}

/** A follower further behind than this many records is ended instead of buffering without bound. */
const MAX_FOLLOW_BACKLOG = 10_000;

type Info = MessageInitShape<typeof AuditRecordInfoSchema>;

function info(r: AuditRecord): Info {
  return {
    ts: r.ts,
    seq: BigInt(r.seq),
    event: r.event,
    requestId: r.requestId,
    principal: r.principal,
    authMethod: r.authMethod,
    keyId: r.keyId,
    tenant: r.tenant,
    peer: r.peer,
    service: r.service,
    method: r.method,
    permission: r.permission,
    decision: r.decision,
    reason: r.reason,
    args: r.args,
    code: r.code,
    error: r.error,
    durationMs: BigInt(r.durationMs),
    hash: r.hash,
  };
}

function matcher(
  filter: AuditFilter | undefined,
  visible: (tenant: string) => boolean,
): (r: AuditRecord) => boolean {
  const f = filter;
  const since = f?.since ? Date.parse(f.since) : Number.NEGATIVE_INFINITY;
  const until = f?.until ? Date.parse(f.until) : Number.POSITIVE_INFINITY;
  if (Number.isNaN(since) || Number.isNaN(until))
    throw new RpcError("INVALID_ARGUMENT", { message: "filter.since/until: ISO 8601 times" });
  return (r) =>
    visible(r.tenant ?? "") &&
    (!f?.principal || r.principal === f.principal) &&
    (!f?.event || r.event === f.event) &&
    (!f?.method || r.method === f.method) &&
    (!f?.code || r.code === f.code) &&
    Date.parse(r.ts) >= since &&
    Date.parse(r.ts) <= until;
}

/** The seq of the first record of `path`; undefined when it holds none. */
async function firstSeq(path: string, signal: AbortSignal): Promise<number | undefined> {
  for await (const { record } of readAuditRecords(path, signal)) return record.seq;
  return undefined;
}

/** How many rotated files a page token reads back into: a reader paging while the trail rotates, at a bounded cost. */
const ROTATED_FILES_BACK = 1;

/**
 * The files that hold the records after seq `after`, oldest first: the
 * current one, and before it the newest rotated file when the trail rotated
 * since the page before (the first page, `after` 0, reads the current file
 * only). A token further behind is refused, never paged on from a later
 * record: each call's read stays within two files, and no record is
 * skipped without a word.
 */
async function filesAfter(path: string, after: number, signal: AbortSignal): Promise<string[]> {
  const files = [path];
  if (after === 0) return files;
  const rotated = rotatedAuditFiles(path).map((f) => f.path);
  for (;;) {
    const first = await firstSeq(files[0] as string, signal);
    if (first !== undefined && first <= after + 1) return files;
    const older = rotated[rotated.length - files.length];
    if (files.length > ROTATED_FILES_BACK || older === undefined) break;
    files.unshift(older);
  }
  throw new RpcError("PAGE_TOKEN_INVALID", {
    message:
      "the records after page_token were rotated out of the audit trail's current and last rotated file; list from the start again",
  });
}

/**
 * The records after seq `after`, oldest first, from the first file that
 * holds them on. In that file from `at` when the record there is that very
 * one (seqs in a file are consecutive, so the next line is the next
 * record); otherwise (a token of the file before it, or made up) from the
 * file's start, skipping to the first seq past `after`.
 */
async function* recordsAfter(
  path: string,
  after: number,
  at: number | undefined,
  signal: AbortSignal,
): AsyncIterable<{ record: AuditRecord; at: number }> {
  const [first, ...later] = await filesAfter(path, after, signal);
  let found = false;
  if (at !== undefined)
    for await (const placed of readAuditRecords(first as string, signal, at)) {
      if (!found && placed.record.seq !== after) break;
      if (found) yield placed;
      found = true;
    }
  if (!found)
    for await (const placed of readAuditRecords(first as string, signal))
      if (placed.record.seq > after) yield placed;
  for (const file of later)
    for await (const placed of readAuditRecords(file, signal))
      if (placed.record.seq > after) yield placed;
}

/**
 * The last `n` matching records, oldest first, read from the end of the
 * file and on back into the newest rotated file (as many as paging reads
 * back): right after a rotation the current file holds next to none.
 */
async function lastRecords(
  path: string,
  n: number,
  match: (r: AuditRecord) => boolean,
  signal: AbortSignal,
): Promise<AuditRecord[]> {
  const out: AuditRecord[] = [];
  if (n === 0) return out;
  const files = [
    path,
    ...rotatedAuditFiles(path)
      .map((f) => f.path)
      .reverse(),
  ];
  for (const file of files.slice(0, 1 + ROTATED_FILES_BACK))
    for await (const r of readAuditRecordsBackward(file, signal)) {
      if (!match(r)) continue;
      out.push(r);
      if (out.length === n) return out.reverse();
    }
  return out.reverse();
}

/** AuditService: list and follow the audit trail of the current file (paging on into it from the rotated files). */
export function createAuditService(deps: AuditServiceDeps): ServiceBinding {
  const tokens = createAuditPageTokens();
  return defineService(
    AuditService,
    {
      listAuditRecords: { permission: "audit:read", mutating: false },
      followAuditRecords: { permission: "audit:read", mutating: false },
    },
    {
      async listAuditRecords(req, ctx) {
        const match = matcher(req.filter, scopeOf(ctx).canSee);
        if (req.tail > 0) {
          if (req.pageToken !== "")
            throw new RpcError("INVALID_ARGUMENT", {
              message: "tail: the last records come in one page; send no page_token with it",
            });
          const last = await lastRecords(deps.log.path, req.tail, match, ctx.signal);
          return { records: last.map(info), nextPageToken: "" };
        }
        const size = req.pageSize === 0 ? 100 : Math.min(req.pageSize, 1000);
        const { after, at } = tokens.decode(req.pageToken);
        const out: AuditRecord[] = [];
        let lastAt = 0;
        let more = false;
        for await (const placed of recordsAfter(deps.log.path, after, at, ctx.signal)) {
          if (!match(placed.record)) continue;
          if (out.length === size) {
            more = true;
            break;
          }
          out.push(placed.record);
          lastAt = placed.at;
        }
        const last = out[out.length - 1];
        return {
          records: out.map(info),
          nextPageToken: more && last !== undefined ? tokens.encode(last.seq, lastAt) : "",
        };
      },
      async *followAuditRecords(req, ctx) {
        const match = matcher(req.filter, scopeOf(ctx).canSee);
        const pending: AuditRecord[] = [];
        let wake: (() => void) | undefined;
        let overflow = false;
        // Subscribe before reading the backlog, then drop duplicates by seq: nothing falls in between.
        const unsubscribe = deps.log.subscribe((r) => {
          if (overflow || !match(r)) return;
          // Past the bound, stop queuing: the stream ends instead of growing.
          if (pending.length >= MAX_FOLLOW_BACKLOG) overflow = true;
          else pending.push(r);
          wake?.();
        });
        const onAbort = () => wake?.();
        ctx.signal.addEventListener("abort", onAbort);
        deps.closing.addEventListener("abort", onAbort);
        try {
          const backlog = await lastRecords(deps.log.path, req.backlog, match, ctx.signal);
          let lastSeq = 0;
          for (const r of backlog) {
            lastSeq = r.seq;
            yield info(r);
          }
          while (!ctx.signal.aborted && !deps.closing.aborted) {
            if (overflow)
              throw new RpcError("AUDIT_UNAVAILABLE", {
                message: "follower fell too far behind; follow again",
              });
            const r = pending.shift();
            if (r !== undefined) {
              if (r.seq > lastSeq) {
                lastSeq = r.seq;
                yield info(r);
              }
              continue;
            }
            await new Promise<void>((resolve) => {
              wake = resolve;
            });
            wake = undefined;
          }
        } finally {
          unsubscribe();
          ctx.signal.removeEventListener("abort", onAbort);
          deps.closing.removeEventListener("abort", onAbort);
        }
      },
    },
  );
}
