import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import type { ServiceClient } from "../client/index.js";
import {
  AuditRecordInfoSchema,
  type AuditService,
  type ListAuditRecordsRequest,
  ListAuditRecordsResponseSchema,
} from "../gen/debvisor/v1/audit_pb.js";
import { lastRecords } from "./audit-tail-command.js";

/** A daemon from before `tail`: it ignores the field and pages 100 records at a time (default size). */
function daemonWithoutTail(total: number) {
  const asked: Array<{ tail: number; pageToken: string }> = [];
  const client = {
    async listAuditRecords(req: Partial<ListAuditRecordsRequest>) {
      asked.push({ tail: req.tail ?? 0, pageToken: req.pageToken ?? "" });
      const after = req.pageToken ? Number(req.pageToken) : 0;
      const size = req.pageSize ? req.pageSize : 100;
      const seqs = Array.from({ length: total }, (_, i) => i + 1).filter((s) => s > after);
      const page = seqs.slice(0, size);
      return create(ListAuditRecordsResponseSchema, {
        records: page.map((s) => create(AuditRecordInfoSchema, { seq: BigInt(s) })),
        nextPageToken: seqs.length > size ? String(page[page.length - 1]) : "",
      });
    },
  } as unknown as ServiceClient<typeof AuditService>;
  return { client, asked };
}

const filter = { principal: "", event: "", method: "", code: "", since: "", until: "" };

describe("hvctl audit tail against a daemon from before `tail`", () => {
  for (const total of [3, 100, 2500]) {
    it(`pages to the end of a trail of ${total} and prints its last 20`, async () => {
      const d = daemonWithoutTail(total);
      const last = await lastRecords(d.client, filter, 20);
      const want = Array.from(
        { length: Math.min(20, total) },
        (_, i) => total - Math.min(20, total) + i + 1,
      );
      assert.deepEqual(
        last.map((r) => Number(r.seq)),
        want,
      );
    });
  }
});
