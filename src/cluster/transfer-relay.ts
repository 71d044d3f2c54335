import { createHash, randomBytes } from "node:crypto";
import { type Clock, type Logger, RpcError, silentLogger } from "../core/index.js";
import { createBoundedPipe } from "./bounded-pipe.js";

/** What a transfer is for: its tickets work only for these nodes. */
export interface TransferBinding {
  readonly jobId: string;
  /** The node whose agent uploads (its certificate's common name). */
  readonly source: string;
  /** The node whose agent downloads. */
  readonly target: string;
}

/** A transfer this process relays, as its issuer sees it. */
export interface IssuedTransfer {
  readonly id: string;
  /** For the source agent only; never stored or logged. */
  readonly uploadTicket: string;
  /** For the target agent only; never stored or logged. */
  readonly downloadTicket: string;
  /** Bytes relayed so far. */
  bytes(): number;
  /** Ends it: unused tickets stop working and both sides' calls fail with `reason`. */
  abort(reason: RpcError): void;
}

/** Options of {@link createTransferRelay}. */
export interface TransferRelayOptions {
  readonly clock: Clock;
  /** A ticket not presented within this long expires (default 60 s). */
  readonly ticketTtlMs?: number;
  /** Bytes held between the upload and the download before the upload waits (default 4 MiB). */
  readonly bufferBytes?: number;
  readonly logger?: Logger;
  /**
   * This process's id: its tickets start with a tag of it, so a ticket
   * presented to another control-plane process is refused as minted
   * elsewhere (the answer is the same as for any refused ticket).
   */
  readonly relayId?: string;
}

/**
 * Relays send streams from a source agent to a target agent through this
 * control-plane process. Each transfer has two one-time tickets (upload for
 * the source node, download for the target node), kept only as SHA-256
 * hashes in memory: a ticket works once, from the certificate of the node
 * it names, before it expires. The stream passes through a bounded buffer,
 * so a slow target slows the source instead of filling memory.
 */
export interface TransferRelay {
  issue(binding: TransferBinding, onBytes?: (bytes: number) => void): IssuedTransfer;
  /**
   * The source's upload: redeems the ticket for `node`, then writes every
   * chunk through; resolves with the byte count once the target has read
   * them all. TRANSFER_TICKET_INVALID before anything happens otherwise.
   */
  upload(
    ticket: string,
    node: string,
    chunks: AsyncIterable<Uint8Array>,
    signal: AbortSignal,
  ): Promise<number>;
  /** The target's download: redeems the ticket for `node`, then yields the stream's chunks. */
  download(ticket: string, node: string, signal: AbortSignal): AsyncIterable<Uint8Array>;
  /** Transfers in flight. */
  size(): number;
}

interface Ticket {
  readonly transfer: Transfer;
  readonly direction: "upload" | "download";
  readonly node: string;
  readonly expiresAt: number;
}

interface Transfer {
  readonly id: string;
  readonly binding: TransferBinding;
  readonly pipe: ReturnType<typeof createBoundedPipe>;
}

const hashOf = (ticket: string) => createHash("sha256").update(ticket).digest("hex");

/** Creates a {@link TransferRelay}. */
export function createTransferRelay(options: TransferRelayOptions): TransferRelay {
  const { clock } = options;
  const log = options.logger ?? silentLogger;
  const ttlMs = options.ticketTtlMs ?? 60_000;
  const bufferBytes = options.bufferBytes ?? 4 * 1024 * 1024;
  const tickets = new Map<string, Ticket>();
  const tag = `${createHash("sha256")
    .update(options.relayId ?? randomBytes(16))
    .digest("hex")
    .slice(0, 8)}.`;
  const transfers = new Map<string, Transfer>();

  const sweep = () => {
    const now = clock.now();
    for (const [hash, t] of tickets) if (t.expiresAt < now) tickets.delete(hash);
  };

  /** The transfer a ticket opens; the same refusal for every way it can be wrong. */
  function redeem(ticket: string, node: string, direction: Ticket["direction"]): Transfer {
    const hash = hashOf(ticket);
    const t = tickets.get(hash);
    const why =
      t === undefined
        ? ticket.startsWith(tag)
          ? "unknown or already used"
          : "minted by another control-plane process"
        : t.expiresAt < clock.now()
          ? "expired"
          : t.direction !== direction
            ? `a ${t.direction} ticket presented for a ${direction}`
            : t.node !== node
              ? `issued to ${t.node}`
              : undefined;
    if (why !== undefined || t === undefined) {
      if (t !== undefined && why === "expired") tickets.delete(hash);
      log.warn({ node, direction, transfer: t?.transfer.id, why }, "transfer ticket refused");
      throw new RpcError("TRANSFER_TICKET_INVALID", {
        cause: new Error(`${direction} ticket from ${node}: ${why}`),
      });
    }
    tickets.delete(hash);
    return t.transfer;
  }

  return {
    issue(binding, onBytes) {
      sweep();
      const id = randomBytes(8).toString("hex");
      const transfer: Transfer = {
        id,
        binding,
        pipe: createBoundedPipe(bufferBytes, onBytes),
      };
      const expiresAt = clock.now() + ttlMs;
      const uploadTicket = tag + randomBytes(32).toString("base64url");
      const downloadTicket = tag + randomBytes(32).toString("base64url");
      tickets.set(hashOf(uploadTicket), {
        transfer,
        direction: "upload",
        node: binding.source,
        expiresAt,
      });
      tickets.set(hashOf(downloadTicket), {
        transfer,
        direction: "download",
        node: binding.target,
        expiresAt,
      });
      transfers.set(id, transfer);
      // A side that never comes (its ticket expired unused) ends the transfer for the other.
      const abandoned = setTimeout(() => {
        if ([...tickets.values()].some((t) => t.transfer === transfer))
          transfer.pipe.fail(
            new RpcError("STORAGE_UNAVAILABLE", {
              message: "the other side of the transfer never came",
            }),
          );
      }, ttlMs + 1000);
      abandoned.unref();
      const forget = () => {
        clearTimeout(abandoned);
        transfers.delete(id);
        for (const [hash, t] of tickets) if (t.transfer === transfer) tickets.delete(hash);
      };
      transfer.pipe.finished.then(forget, forget);
      log.info({ transfer: id, ...binding }, "transfer issued");
      return {
        id,
        uploadTicket,
        downloadTicket,
        bytes: () => transfer.pipe.bytes(),
        abort: (reason) => transfer.pipe.fail(reason),
      };
    },
    async upload(ticket, node, chunks, signal) {
      const { pipe, id } = redeem(ticket, node, "upload");
      const onAbort = () => pipe.fail(new RpcError("CANCELLED"));
      signal.addEventListener("abort", onAbort, { once: true });
      try {
        for await (const chunk of chunks) await pipe.write(chunk);
        pipe.end();
        await pipe.finished;
        log.info({ transfer: id, bytes: pipe.bytes() }, "transfer relayed");
        return pipe.bytes();
      } catch (err) {
        pipe.fail(
          err instanceof RpcError
            ? err
            : new RpcError("STORAGE_UNAVAILABLE", { message: "upload interrupted", cause: err }),
        );
        throw err;
      } finally {
        signal.removeEventListener("abort", onAbort);
      }
    },
    download(ticket, node, signal) {
      const { pipe } = redeem(ticket, node, "download");
      return pipe.read(signal);
    },
    size: () => transfers.size,
  };
}
