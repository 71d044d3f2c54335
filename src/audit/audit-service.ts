import { createReadStream, existsSync } from "node:fs";
import { createInterface } from "node:readline";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { defineService, RpcError, type ServiceBinding, scopeOf } from "../core/index.js";
import {
  type AuditFilter,
  type AuditRecordInfoSchema,
  AuditService,
} from "../gen/debvisor/v1/audit_pb.js";
import type { AuditLog } from "./audit-log.js";
import type { AuditRecord } from "./audit-record.js";

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

async function* readRecords(path: string, signal: AbortSignal): AsyncIterable<AuditRecord> {
  if (!existsSync(path)) return;
  const lines = createInterface({
    input: createReadStream(path),
    crlfDelay: Number.POSITIVE_INFINITY,
  });
  try {
    for await (const line of lines) {
      if (signal.aborted) return;
      if (line === "") continue;
      try {
        yield JSON.parse(line) as AuditRecord;
      } catch {
        // A torn line at the very end is repaired at the next start; skip it here.
      }
    }
  } finally {
    lines.close();
  }
}

/** AuditService: list and follow the audit trail of the current file. */
export function createAuditService(deps: AuditServiceDeps): ServiceBinding {
  return defineService(
    AuditService,
    {
      listAuditRecords: { permission: "audit:read", mutating: false },
      followAuditRecords: { permission: "audit:read", mutating: false },
    },
    {
      async listAuditRecords(req, ctx) {
        const match = matcher(req.filter, scopeOf(ctx).canSee);
        const size = req.pageSize === 0 ? 100 : Math.min(req.pageSize, 1000);
        const after = req.pageToken === "" ? 0 : Number(req.pageToken);
        if (!Number.isSafeInteger(after) || after < 0) throw new RpcError("PAGE_TOKEN_INVALID");
        const out: AuditRecord[] = [];
        let more = false;
        for await (const r of readRecords(deps.log.path, ctx.signal)) {
          if (r.seq <= after || !match(r)) continue;
          if (out.length === size) {
            more = true;
            break;
          }
          out.push(r);
        }
        const last = out[out.length - 1];
        return {
          records: out.map(info),
          nextPageToken: more && last !== undefined ? String(last.seq) : "",
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
          const backlog: AuditRecord[] = [];
          if (req.backlog > 0) {
            for await (const r of readRecords(deps.log.path, ctx.signal)) {
              if (!match(r)) continue;
              backlog.push(r);
              if (backlog.length > req.backlog) backlog.shift();
            }
          }
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
