import pino from "pino";
import type { Logger } from "../core/index.js";

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

/** Creates the daemon's JSON logger, to stdout or to `file` (created if missing). */
export function createLogger(level: string, file?: string): DaemonLogger {
  const destination =
    file === undefined
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
    destination,
  );
  const wrap = (l: pino.Logger): DaemonLogger => ({
    debug: (o, m) => l.debug(o, m),
    info: (o, m) => l.info(o, m),
    warn: (o, m) => l.warn(o, m),
    error: (o, m) => l.error(o, m),
    child: (b) => wrap(l.child(b)),
    setLevel: (lv) => {
      l.level = lv;
    },
    flush: () => destination.flushSync(),
  });
  return wrap(root);
}
