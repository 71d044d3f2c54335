import pino from "pino";
import type { Logger } from "../core/index.js";
import { prettyDestination } from "./pretty-log.js";

/** What must never reach a log line, wherever it appears in a logged object. */
const REDACT = [
  "authorization",
  "*.authorization",
  "headers.authorization",
  "*.keyPem",
  "*.key_pem",
  "*.password",
  "*.secret",
  "*.token",
  "*.apiKey",
];

/** A pino logger bound to the daemon's name; the root and a setter for the level (SIGHUP reload). */
export interface DaemonLogger extends Logger {
  setLevel(level: string): void;
  flush(): void;
}

/** How log lines are written: JSON, lines for people, or people's lines only on a terminal. */
export type LogFormat = "json" | "pretty" | "auto";

/**
 * Creates the daemon's logger, to stdout or to `file` (created if missing).
 * Lines are JSON, except on stdout with `format` "pretty", or "auto" when
 * stdout is a terminal: then they read like `06:12:01 INFO  serving ...`
 * (coloured unless NO_COLOR is set). Redaction applies either way.
 */
export function createLogger(
  level: string,
  file?: string,
  format: LogFormat = "json",
  env: NodeJS.ProcessEnv = process.env,
): DaemonLogger {
  const pretty =
    file === undefined && (format === "pretty" || (format === "auto" && process.stdout.isTTY));
  const destination = pretty
    ? undefined
    : file === undefined
      ? pino.destination({ fd: 1, sync: false })
      : pino.destination({ dest: file, mkdir: true, sync: false });
  const root = pino(
    {
      name: "debvisor-rpcd",
      level,
      redact: { paths: REDACT, censor: "[redacted]" },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ??
      prettyDestination(
        process.stdout,
        process.stdout.isTTY === true && env.NO_COLOR === undefined,
      ),
  );
  return {
    debug: (o, m) => root.debug(o, m),
    info: (o, m) => root.info(o, m),
    warn: (o, m) => root.warn(o, m),
    error: (o, m) => root.error(o, m),
    child: (b) => new LazyChild(root, root, b),
    setLevel: (lv) => {
      root.level = lv;
    },
    flush: () => destination?.flushSync(),
  };
}

/**
 * A child logger that becomes a pino child on its first line at an enabled
 * level. Every call gets one (and another once authenticated), most never
 * log, and pino's child() serializes and redacts its bindings right away.
 * Like pino's own children, it follows the root's level (SIGHUP reload).
 */
class LazyChild implements Logger {
  #logger: pino.Logger | undefined;
  readonly #bindings: Record<string, unknown>;

  constructor(
    private readonly root: pino.Logger,
    private readonly parent: pino.Logger | LazyChild,
    bindings: Record<string, unknown>,
  ) {
    // Copied: what the caller does to its object later does not reach the log.
    this.#bindings = { ...bindings };
  }

  #pino(): pino.Logger {
    if (this.#logger === undefined) {
      const parent = this.parent instanceof LazyChild ? this.parent.#pino() : this.parent;
      this.#logger = parent.child(this.#bindings);
    }
    return this.#logger;
  }

  #at(level: pino.Level, obj: object, msg: string | undefined): void {
    if (!this.root.isLevelEnabled(level)) return;
    this.#pino()[level](obj, msg);
  }

  debug(obj: object, msg?: string): void {
    this.#at("debug", obj, msg);
  }
  info(obj: object, msg?: string): void {
    this.#at("info", obj, msg);
  }
  warn(obj: object, msg?: string): void {
    this.#at("warn", obj, msg);
  }
  error(obj: object, msg?: string): void {
    this.#at("error", obj, msg);
  }
  child(bindings: Record<string, unknown>): Logger {
    return new LazyChild(this.root, this, bindings);
  }
}
