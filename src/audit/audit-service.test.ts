import assert from "node:assert/strict";
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { type CallContext, RpcError, silentLogger } from "../core/index.js";
import {
  type AuditRecordInfo,
  type ListAuditRecordsRequest,
  ListAuditRecordsRequestSchema,
  type ListAuditRecordsResponse,
} from "../gen/debvisor/v1/audit_pb.js";
import { readAuditRecords, readAuditRecordsBackward } from "./audit-file-reader.js";
import { openAuditLog } from "./audit-log.js";
import { createAuditPageTokens } from "./audit-page-token.js";
import type { AuditFields } from "./audit-record.js";
import { createAuditService } from "./audit-service.js";

const fields = (i: number, tenant: string, argsBytes: number): AuditFields => ({
  event: "rpc",
  requestId: `r-${i}`,
  principal: "p",
  authMethod: "mtls",
  keyId: "",
  tenant,
  peer: "127.0.0.1:1",
  service: "s",
  method: i % 3 === 0 ? "GetVm" : "ListVms",
  permission: "vm:read",
  decision: "allow",
  reason: "",
  args: "x".repeat(argsBytes),
  code: "OK",
  error: "",
  durationMs: 1,
});

/** A trail of `n` records (and the start record), some of them longer than a read. */
async function trail(n: number) {
  const path = join(mkdtempSync(join(tmpdir(), "dv-audit-svc-")), "audit.log");
  const log = await openAuditLog({ path, logger: silentLogger });
  for (let i = 1; i <= n; i++)
    await log.append(fields(i, i % 2 === 0 ? "acme" : "globex", i % 97 === 0 ? 150_000 : 200));
  const closing = new AbortController();
  const service = createAuditService({ log, closing: closing.signal });
  const list = service.methods.find((m) => m.spec.name === "ListAuditRecords")?.handler as (
    req: ListAuditRecordsRequest,
    ctx: CallContext,
  ) => Promise<ListAuditRecordsResponse>;
  const call = (req: MessageInitShape<typeof ListAuditRecordsRequestSchema>, tenant?: string) =>
    list(create(ListAuditRecordsRequestSchema, req), {
      signal: new AbortController().signal,
      scope: {
        tenant,
        clusterWide: tenant === undefined,
        canSee: (t: string) => tenant === undefined || t === tenant,
      },
    } as unknown as CallContext);
  return { path, log, call, close: () => log.close() };
}

/** Every page of a listing, following its tokens. */
async function allPages(
  call: (
    req: MessageInitShape<typeof ListAuditRecordsRequestSchema>,
  ) => Promise<ListAuditRecordsResponse>,
  req: MessageInitShape<typeof ListAuditRecordsRequestSchema>,
): Promise<{ records: AuditRecordInfo[]; tokens: string[] }> {
  const records: AuditRecordInfo[] = [];
  const tokens: string[] = [];
  let pageToken = "";
  for (let pages = 0; pages < 1000; pages++) {
    const page = await call({ ...req, pageToken });
    records.push(...page.records);
    if (page.nextPageToken === "") break;
    tokens.push(page.nextPageToken);
    pageToken = page.nextPageToken;
  }
  return { records, tokens };
}

const seqs = (rs: readonly AuditRecordInfo[]) => rs.map((r) => Number(r.seq));

describe("reading an audit file", () => {
  it("forward from a line's offset and backward give the same records, long lines and a torn end included", async () => {
    const t = await trail(300);
    await t.close();
    // A line still being written, and a line that is not a record.
    appendFileSync(t.path, '{"seq":999,"event":"rp');
    const signal = new AbortController().signal;
    const forward = [];
    for await (const p of readAuditRecords(t.path, signal)) forward.push(p);
    assert.deepEqual(
      forward.map((p) => p.record.seq),
      Array.from({ length: 301 }, (_, i) => i + 1),
    );
    const text = readFileSync(t.path);
    for (const p of forward) assert.ok(p.at === 0 || text[p.at - 1] === 0x0a, "a line's start");
    const backward = [];
    for await (const r of readAuditRecordsBackward(t.path, signal)) backward.push(r.seq);
    assert.deepEqual(backward, [...forward.map((p) => p.record.seq)].reverse());
    const from = forward[150];
    const rest = [];
    for await (const p of readAuditRecords(t.path, signal, from?.at)) rest.push(p.record.seq);
    assert.deepEqual(
      rest,
      forward.slice(150).map((p) => p.record.seq),
    );
    writeFileSync(t.path, "not a record\n");
    const none = [];
    for await (const r of readAuditRecordsBackward(t.path, signal)) none.push(r);
    assert.deepEqual(none, []);
  });
});

describe("AuditService.ListAuditRecords", () => {
  it("pages through every matching record once, in order, to a tenant only its own", async () => {
    const t = await trail(400);
    try {
      const all = await allPages(t.call, { pageSize: 7 });
      assert.deepEqual(
        seqs(all.records),
        Array.from({ length: 401 }, (_, i) => i + 1),
      );
      const acme = await allPages((r) => t.call(r, "acme"), {
        pageSize: 9,
        filter: { method: "GetVm" },
      });
      assert.ok(acme.records.length > 20);
      assert.ok(acme.records.every((r) => r.tenant === "acme" && r.method === "GetVm"));
      assert.equal(acme.records.length, new Set(seqs(acme.records)).size, "no record twice");
      // A token of an earlier daemon (a plain seq) and one whose offset points elsewhere
      // (a made-up token, or the file rotated since) page on from the same record.
      const token = all.tokens[10] as string;
      const [seq] = token.split(".");
      const expected = seqs((await t.call({ pageSize: 7, pageToken: token })).records);
      for (const other of [seq as string, `${seq}.0`, `${seq}.5`, `${seq}.999999999`])
        assert.deepEqual(seqs((await t.call({ pageSize: 7, pageToken: other })).records), expected);
      await assert.rejects(
        t.call({ pageToken: "1.2.3" }),
        (e: unknown) => e instanceof RpcError && e.reason === "PAGE_TOKEN_INVALID",
      );
    } finally {
      await t.close();
    }
  });

  it("gives a tenant page tokens that do not tell the size of other tenants' records", async () => {
    const t = await trail(60);
    try {
      const placed = new Map<number, number>();
      for await (const p of readAuditRecords(t.path, new AbortController().signal))
        placed.set(p.record.seq, p.at);
      const bytes = (seq: number) => (placed.get(seq + 1) ?? 0) - (placed.get(seq) ?? 0);
      // acme pages one record at a time: between two of its records lies one of globex's.
      const acme = await allPages((r) => t.call(r, "acme"), { pageSize: 1 });
      assert.equal(acme.records.length, 30);
      const seen: number[] = [];
      const actual: number[] = [];
      for (let i = 1; i < acme.tokens.length; i++) {
        const [seq, at] = (acme.tokens[i] as string).split(".").map(Number);
        const [prevSeq, prevAt] = (acme.tokens[i - 1] as string).split(".").map(Number);
        assert.equal(seq, (prevSeq as number) + 2, "one globex record in between");
        // What acme would work out: the distance between its lines, less its own line.
        seen.push((at as number) - (prevAt as number) - bytes(prevSeq as number));
        actual.push(bytes((prevSeq as number) + 1));
      }
      assert.notDeepEqual(seen, actual, "the tokens give away the size of globex's records");
      // Paging on from a token still works (the offset comes back to the daemon that made it).
      assert.deepEqual(
        seqs(acme.records),
        Array.from({ length: 30 }, (_, i) => 2 * i + 3),
      );
    } finally {
      await t.close();
    }
  });

  it("gets the offset back from a token of the same daemon only", () => {
    const tokens = createAuditPageTokens();
    for (const [seq, at] of [
      [1, 0],
      [7, 123_456],
      [999_999_999_999_999, 2 ** 48 - 1],
    ] as const)
      assert.deepEqual(tokens.decode(tokens.encode(seq, at)), { after: seq, at });
    assert.deepEqual(tokens.decode(tokens.encode(5, 2 ** 48)), { after: 5, at: undefined });
    assert.deepEqual(tokens.decode("5"), { after: 5, at: undefined });
    assert.notEqual(createAuditPageTokens().decode(tokens.encode(7, 123_456)).at, 123_456);
  });

  it("pages on across a rotation without skipping the records rotated out of the current file", async () => {
    const path = join(mkdtempSync(join(tmpdir(), "dv-audit-svc-")), "audit.log");
    const rotations = () => readdirSync(join(path, "..")).filter((f) => f !== "audit.log").length;
    // About 600 bytes a record: a rotation every 10 or so.
    const log = await openAuditLog({ path, maxBytes: 6000, logger: silentLogger });
    try {
      const closing = new AbortController();
      const service = createAuditService({ log, closing: closing.signal });
      const list = service.methods.find((m) => m.spec.name === "ListAuditRecords")?.handler as (
        req: ListAuditRecordsRequest,
        ctx: CallContext,
      ) => Promise<ListAuditRecordsResponse>;
      const call = (req: MessageInitShape<typeof ListAuditRecordsRequestSchema>) =>
        list(create(ListAuditRecordsRequestSchema, req), {
          signal: new AbortController().signal,
          scope: { clusterWide: true, canSee: () => true },
        } as unknown as CallContext);
      let n = 0;
      for (; n < 6; n++) await log.append(fields(n, "acme", 200));
      const first = await call({ pageSize: 3 });
      assert.deepEqual(seqs(first.records), [1, 2, 3]);
      // The trail rotates while the reader is between pages.
      while (rotations() < 1 && n < 100) await log.append(fields(n++, "acme", 200));
      for (let i = 0; i < 3; i++) await log.append(fields(n++, "acme", 200));
      const rest: AuditRecordInfo[] = [];
      let pageToken = first.nextPageToken;
      for (let pages = 0; pages < 100 && pageToken !== ""; pages++) {
        const page = await call({ pageSize: 5, pageToken });
        rest.push(...page.records);
        pageToken = page.nextPageToken;
      }
      assert.deepEqual(
        seqs(rest),
        Array.from({ length: n + 1 - 3 }, (_, i) => i + 4),
        "every record after the token, once, in order",
      );
      // A token three rotations behind is refused, not paged on from the current file.
      while (rotations() < 3 && n < 200) await log.append(fields(n++, "acme", 200));
      await assert.rejects(
        call({ pageSize: 5, pageToken: first.nextPageToken }),
        (e: unknown) => e instanceof RpcError && e.reason === "PAGE_TOKEN_INVALID",
      );
    } finally {
      await log.close();
    }
  });

  it("gives the last records with tail right after a rotation, from the rotated file too", async () => {
    const path = join(mkdtempSync(join(tmpdir(), "dv-audit-svc-")), "audit.log");
    const log = await openAuditLog({ path, maxBytes: 6000, logger: silentLogger });
    try {
      const service = createAuditService({ log, closing: new AbortController().signal });
      const list = service.methods.find((m) => m.spec.name === "ListAuditRecords")?.handler as (
        req: ListAuditRecordsRequest,
        ctx: CallContext,
      ) => Promise<ListAuditRecordsResponse>;
      let n = 0;
      while (readdirSync(join(path, "..")).length < 2 && n < 100)
        await log.append(fields(n++, "acme", 200));
      // n records and the start record; the last of them alone in the current file.
      const last = await list(create(ListAuditRecordsRequestSchema, { tail: 5 }), {
        signal: new AbortController().signal,
        scope: { clusterWide: true, canSee: () => true },
      } as unknown as CallContext);
      assert.deepEqual(
        seqs(last.records),
        Array.from({ length: 5 }, (_, i) => n - 3 + i),
      );
    } finally {
      await log.close();
    }
  });

  it("gives the last records with tail, newest last, only those the caller may see", async () => {
    const t = await trail(400);
    try {
      const last = await t.call({ tail: 5 });
      assert.deepEqual(seqs(last.records), [397, 398, 399, 400, 401]);
      assert.equal(last.nextPageToken, "");
      const acme = await t.call({ tail: 4, filter: { method: "GetVm" } }, "acme");
      // acme: even i; GetVm: i a multiple of 3; record i has seq i + 1 (the start record is 1).
      assert.deepEqual(seqs(acme.records), [379, 385, 391, 397]);
      assert.ok(acme.records.every((r) => r.tenant === "acme" && r.method === "GetVm"));
      const many = await t.call({ tail: 1000 }, "globex");
      assert.equal(many.records.length, 200, "every globex record, no more");
      await assert.rejects(
        t.call({ tail: 3, pageToken: "5" }),
        (e: unknown) => e instanceof RpcError && e.reason === "INVALID_ARGUMENT",
      );
    } finally {
      await t.close();
    }
  });
});
