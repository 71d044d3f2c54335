import { RpcError } from "../core/index.js";

/** One writer, one reader, at most a bound of bytes between them. */
export interface BoundedPipe {
  /** Resolves once the buffer is back under its bound; rejects once the pipe failed. */
  write(chunk: Uint8Array): Promise<void>;
  /** No more chunks: the reader ends after the last one. */
  end(): void;
  /** Fails both sides (first failure wins). */
  fail(err: RpcError): void;
  /** The chunks, each once; throws the failure. Aborting `signal` fails the pipe. */
  read(signal: AbortSignal): AsyncIterable<Uint8Array>;
  /** Bytes written so far. */
  bytes(): number;
  /** Resolves when the reader took the last chunk of an ended pipe; rejects on failure. */
  readonly finished: Promise<void>;
}

/**
 * A pipe whose writer waits while more than `maxBytes` are buffered, so a
 * relay holds at most that much of a stream, however large the stream.
 */
export function createBoundedPipe(
  maxBytes: number,
  onBytes?: (bytes: number) => void,
): BoundedPipe {
  const chunks: Uint8Array[] = [];
  let buffered = 0;
  let total = 0;
  let ended = false;
  let failure: RpcError | undefined;
  let reading = false;
  let wake: (() => void) | undefined;
  let space: (() => void) | undefined;
  let settle: { resolve: () => void; reject: (e: RpcError) => void } | undefined;
  const finished = new Promise<void>((resolve, reject) => {
    settle = { resolve, reject };
  });
  finished.catch(() => {});
  const notify = () => {
    wake?.();
    wake = undefined;
    space?.();
    space = undefined;
  };

  const pipe: BoundedPipe = {
    async write(chunk) {
      if (failure !== undefined) throw failure;
      if (ended) throw new TypeError("write after end");
      chunks.push(chunk);
      buffered += chunk.length;
      total += chunk.length;
      onBytes?.(total);
      notify();
      while (buffered > maxBytes && failure === undefined)
        await new Promise<void>((r) => {
          space = r;
        });
      if (failure !== undefined) throw failure;
    },
    end() {
      ended = true;
      notify();
    },
    fail(err) {
      if (failure !== undefined) return;
      failure = err;
      settle?.reject(err);
      notify();
    },
    async *read(signal) {
      if (reading) throw new TypeError("one reader only");
      reading = true;
      const onAbort = () => pipe.fail(new RpcError("CANCELLED"));
      signal.addEventListener("abort", onAbort, { once: true });
      try {
        for (;;) {
          if (failure !== undefined) throw failure;
          const next = chunks.shift();
          if (next !== undefined) {
            buffered -= next.length;
            notify();
            yield next;
            continue;
          }
          if (ended) {
            settle?.resolve();
            return;
          }
          await new Promise<void>((r) => {
            wake = r;
          });
        }
      } finally {
        signal.removeEventListener("abort", onAbort);
        // A reader that stopped early leaves the writer nothing to wait for.
        if (!ended || chunks.length > 0)
          pipe.fail(new RpcError("STORAGE_UNAVAILABLE", { message: "download interrupted" }));
      }
    },
    bytes: () => total,
    finished,
  };
  return pipe;
}
