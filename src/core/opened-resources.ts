import type { Logger } from "./logger.js";

/**
 * What a process (the daemon, the agent) has opened so far, as a stack:
 * each part of start-up pushes how to close what it just opened. A
 * start-up that fails midway and a shutdown unwind the same stack, newest
 * first.
 */
export interface OpenedResources {
  /** Remembers how to close what was just opened; `name` shows in the log when closing fails. */
  push(name: string, close: () => unknown): void;
  /**
   * Closes everything pushed so far, newest first, each once. A closer that
   * throws is logged and the others still run. Idempotent.
   */
  unwind(): Promise<void>;
}

/** An empty stack of opened resources; closing failures go to `logger`. */
export function createOpenedResources(logger: Logger): OpenedResources {
  const stack: { name: string; close: () => unknown }[] = [];
  let unwinding: Promise<void> | undefined;
  return {
    push(name, close) {
      if (unwinding !== undefined) throw new TypeError(`${name} opened while closing`);
      stack.push({ name, close });
    },
    unwind() {
      unwinding ??= (async () => {
        for (let r = stack.pop(); r !== undefined; r = stack.pop()) {
          try {
            await r.close();
          } catch (err) {
            logger.error({ err, resource: r.name }, "closing failed; closing the rest");
          }
        }
      })();
      return unwinding;
    },
  };
}
