// Audit trail reading benchmark: how long AuditService takes to page
// through a trail of --records records (1,000 a page) and to give its last
// 20, the way `hvctl audit tail` asks. "seq tokens" pages with plain-seq
// tokens, which the daemon answers as it did before offset tokens (each page
// reads the file from its start); "offset tokens" with the tokens it gives
// now. "tail" is one ListAuditRecords with `tail: 20`. Variants alternate
// within each round and the table reports medians over the rounds.
//
//   npm run build && node dist/bench/audit-read.js --records 100000 --rounds 3
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { createAuditService, openAuditLog } from "../src/audit/index.js";
import { type CallContext, silentLogger } from "../src/core/index.js";
import {
  type ListAuditRecordsRequest,
  ListAuditRecordsRequestSchema,
  type ListAuditRecordsResponse,
} from "../src/gen/debvisor/v1/audit_pb.js";
import { median } from "./bench-support.js";

const { values } = parseArgs({
  options: {
    records: { type: "string", default: "100000" },
    rounds: { type: "string", default: "3" },
  },
});
const RECORDS = Math.min(2_000_000, Math.max(1000, Number(values.records)));
const ROUNDS = Math.min(20, Math.max(1, Number(values.rounds)));

const dir = mkdtempSync(join(tmpdir(), "dv-bench-audit-"));
const path = join(dir, "audit.log");
const log = await openAuditLog({ path, logger: silentLogger, maxBytes: 64 * 1024 ** 3 });
for (let i = 0; i < RECORDS; i += 5000)
  await Promise.all(
    Array.from({ length: Math.min(5000, RECORDS - i) }, (_, j) =>
      log.append({
        event: "rpc",
        requestId: `r-${i + j}`,
        principal: "admin",
        authMethod: "mtls",
        keyId: "",
        tenant: (i + j) % 2 === 0 ? "acme" : "",
        peer: "127.0.0.1:40000",
        service: "debvisor.v1.VmService",
        method: "GetVm",
        permission: "vm:read",
        decision: "allow",
        reason: "role admin",
        args: '{"id":"vm-0001"}',
        code: "OK",
        error: "",
        durationMs: 1,
      }),
    ),
  );
const service = createAuditService({ log, closing: new AbortController().signal });
const list = service.methods.find((m) => m.spec.name === "ListAuditRecords")?.handler as (
  req: ListAuditRecordsRequest,
  ctx: CallContext,
) => Promise<ListAuditRecordsResponse>;
const ctx = {
  signal: new AbortController().signal,
  scope: { tenant: undefined, clusterWide: true, canSee: () => true },
} as unknown as CallContext;
const call = (req: MessageInitShape<typeof ListAuditRecordsRequestSchema>) =>
  list(create(ListAuditRecordsRequestSchema, req), ctx);

/** Pages through the whole trail; with `plainSeq`, sends each token as the plain seq earlier daemons gave. */
async function pageAll(plainSeq: boolean): Promise<number> {
  let n = 0;
  let pageToken = "";
  for (let pages = 0; pages < 100_000; pages++) {
    const page = await call({ pageSize: 1000, pageToken });
    n += page.records.length;
    if (page.nextPageToken === "") break;
    pageToken = plainSeq ? (page.nextPageToken.split(".")[0] as string) : page.nextPageToken;
  }
  return n;
}

const variants: Record<string, () => Promise<number>> = {
  "seq tokens (every page from the start)": () => pageAll(true),
  "offset tokens": () => pageAll(false),
  "tail: 20": async () => (await call({ tail: 20 })).records.length,
};
const times = new Map<string, number[]>(Object.keys(variants).map((k) => [k, []]));
for (let round = 0; round < ROUNDS; round++)
  for (const [name, run] of Object.entries(variants)) {
    const t0 = performance.now();
    const n = await run();
    times.get(name)?.push(performance.now() - t0);
    if (n !== (name.startsWith("tail") ? 20 : RECORDS + 1))
      throw new Error(`${name}: ${n} records`);
  }
await log.close();
console.log(
  `${RECORDS} records, ${(statSync(path).size / 1024 ** 2).toFixed(1)} MiB; medians of ${ROUNDS} rounds`,
);
for (const [name, ms] of times)
  console.log(
    `${name.padEnd(40)} ${median(ms).toFixed(1)} ms  (${ms.map((m) => m.toFixed(0)).join(", ")})`,
  );
rmSync(dir, { recursive: true, force: true });
