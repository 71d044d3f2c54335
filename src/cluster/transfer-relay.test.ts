import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createManualClock, RpcError, systemClock } from "../core/index.js";
import { createTransferRelay } from "./transfer-relay.js";

const BINDING = { jobId: "job-1", source: "node-a", target: "node-b" };
const refused = (err: unknown) =>
  err instanceof RpcError && err.reason === "TRANSFER_TICKET_INVALID";

async function* chunks(n: number, size: number): AsyncIterable<Uint8Array> {
  for (let i = 0; i < n; i++) yield new Uint8Array(size).fill(i);
}

/** Reads a download to its end; `open` may throw at once (a refused ticket). */
async function drain(open: () => AsyncIterable<Uint8Array>): Promise<number> {
  let bytes = 0;
  for await (const c of open()) bytes += c.length;
  return bytes;
}

describe("createTransferRelay", () => {
  it("relays the source's upload to the target's download, byte for byte", async () => {
    const relay = createTransferRelay({ clock: createManualClock(0) });
    const t = relay.issue(BINDING);
    const signal = new AbortController().signal;
    const [sent, got] = await Promise.all([
      relay.upload(t.uploadTicket, "node-a", chunks(40, 1000), signal),
      drain(() => relay.download(t.downloadTicket, "node-b", signal)),
    ]);
    assert.equal(sent, 40_000);
    assert.equal(got, 40_000);
    assert.equal(relay.size(), 0, "a finished transfer is forgotten");
  });

  it("holds at most its buffer: an upload without a download waits", async () => {
    const relay = createTransferRelay({ clock: createManualClock(0), bufferBytes: 10_000 });
    const t = relay.issue(BINDING);
    const signal = new AbortController().signal;
    let written = 0;
    async function* counted(): AsyncIterable<Uint8Array> {
      for (let i = 0; i < 100; i++) {
        written += 1000;
        yield new Uint8Array(1000);
      }
    }
    const upload = relay.upload(t.uploadTicket, "node-a", counted(), signal);
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(written <= 12_000, `${written} bytes taken before anyone read`);
    assert.equal(await drain(() => relay.download(t.downloadTicket, "node-b", signal)), 100_000);
    assert.equal(await upload, 100_000);
  });

  it("fail-forged: refuses a ticket it never issued", async () => {
    const relay = createTransferRelay({ clock: createManualClock(0) });
    relay.issue(BINDING);
    await assert.rejects(
      drain(() => relay.download("x".repeat(43), "node-b", AbortSignal.timeout(1000))),
      refused,
    );
  });

  it("fail-reused: a ticket works once", async () => {
    const relay = createTransferRelay({ clock: createManualClock(0) });
    const t = relay.issue(BINDING);
    const signal = new AbortController().signal;
    const first = drain(() => relay.download(t.downloadTicket, "node-b", signal));
    await assert.rejects(
      drain(() => relay.download(t.downloadTicket, "node-b", signal)),
      refused,
    );
    await relay.upload(t.uploadTicket, "node-a", chunks(3, 10), signal);
    assert.equal(await first, 30);
    await assert.rejects(relay.upload(t.uploadTicket, "node-a", chunks(1, 1), signal), refused);
  });

  it("fail-expired: a ticket not presented in time is refused", async () => {
    const clock = createManualClock(0);
    const relay = createTransferRelay({ clock, ticketTtlMs: 60_000 });
    const t = relay.issue(BINDING);
    clock.advance(60_001);
    await assert.rejects(
      relay.upload(t.uploadTicket, "node-a", chunks(1, 1), new AbortController().signal),
      refused,
    );
  });

  it("fail-third-node: another node's certificate cannot use a ticket, and the ticket still works for its node", async () => {
    const relay = createTransferRelay({ clock: createManualClock(0) });
    const t = relay.issue(BINDING);
    const signal = new AbortController().signal;
    await assert.rejects(
      drain(() => relay.download(t.downloadTicket, "node-c", signal)),
      refused,
    );
    await assert.rejects(
      drain(() => relay.download(t.uploadTicket, "node-b", signal)),
      refused,
    );
    await assert.rejects(relay.upload(t.downloadTicket, "node-a", chunks(1, 1), signal), refused);
    const [, got] = await Promise.all([
      relay.upload(t.uploadTicket, "node-a", chunks(2, 5), signal),
      drain(() => relay.download(t.downloadTicket, "node-b", signal)),
    ]);
    assert.equal(got, 10, "the refused attempts changed nothing");
  });

  it("an upload whose download never comes ends once the download ticket expired", async () => {
    const relay = createTransferRelay({ clock: systemClock, ticketTtlMs: 50 });
    const t = relay.issue(BINDING);
    const started = performance.now();
    // The relay's timer does not hold the process open; this test must.
    const alive = setTimeout(() => {}, 5000);
    await assert.rejects(
      relay.upload(t.uploadTicket, "node-a", chunks(1, 10), new AbortController().signal),
      (e: unknown) => e instanceof RpcError && e.reason === "STORAGE_UNAVAILABLE",
    );
    clearTimeout(alive);
    assert.ok(performance.now() - started < 5000);
    assert.equal(relay.size(), 0);
  });

  it("an aborted transfer fails both sides", async () => {
    const relay = createTransferRelay({ clock: createManualClock(0) });
    const t = relay.issue(BINDING);
    const signal = new AbortController().signal;
    const down = drain(() => relay.download(t.downloadTicket, "node-b", signal));
    t.abort(new RpcError("STORAGE_UNAVAILABLE"));
    await assert.rejects(
      down,
      (e: unknown) => e instanceof RpcError && e.reason === "STORAGE_UNAVAILABLE",
    );
    await assert.rejects(relay.upload(t.uploadTicket, "node-a", chunks(1, 1), signal), refused);
  });
});
