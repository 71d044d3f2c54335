import { terminalSafe } from "../core/index.js";

/** Colours of the level names on a terminal (none with NO_COLOR). */
const LEVEL_STYLE: Record<string, string> = {
  trace: "\u001b[90m",
  debug: "\u001b[90m",
  info: "\u001b[32m",
  warn: "\u001b[33m",
  error: "\u001b[31m",
  fatal: "\u001b[35m",
};
const RESET = "\u001b[0m";
/** Fields every line has: shown as the line's head, not repeated as key=value. */
const HEAD = new Set(["level", "time", "msg", "pid", "hostname", "name"]);

/**
 * Turns one of the daemon's JSON log lines into a line for people:
 * `06:12:01 INFO  serving address=127.0.0.1:7443 dev=true`. Nested values
 * are shown as JSON; an error shows its message and, on the next lines, its
 * stack. Control characters are shown escaped (core terminalSafe). A line
 * that is not JSON is passed through.
 */
export function prettyLogLine(line: string, color: boolean): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line.endsWith("\n") ? line : `${line}\n`;
  }
  const level = String(entry.level ?? "info");
  const time = typeof entry.time === "string" ? entry.time.slice(11, 19) : "";
  const label = level.toUpperCase().padEnd(5);
  const styled = color ? `${LEVEL_STYLE[level] ?? ""}${label}${RESET}` : label;
  const fields: string[] = [];
  let stack = "";
  for (const [k, v] of Object.entries(entry)) {
    if (HEAD.has(k) || v === undefined) continue;
    if (k === "err" && typeof v === "object" && v !== null) {
      const e = v as { message?: unknown; stack?: unknown };
      fields.push(`err=${terminalSafe(JSON.stringify(String(e.message ?? "")))}`);
      if (typeof e.stack === "string")
        stack = `\n    ${terminalSafe(e.stack, { keepLines: true }).split("\n").join("\n    ")}`;
      continue;
    }
    const text =
      typeof v === "string" ? (/[\s"=]/.test(v) ? JSON.stringify(v) : v) : JSON.stringify(v);
    // Values come from what nodes and callers send (an agent's event kind): escaped, never a
    // terminal's escape sequence.
    fields.push(`${k}=${terminalSafe(text)}`);
  }
  const msg = terminalSafe(String(entry.msg ?? ""));
  return `${time} ${styled} ${msg}${fields.length > 0 ? ` ${fields.join(" ")}` : ""}${stack}\n`;
}

/** A pino destination that writes {@link prettyLogLine}s to `out`. */
export function prettyDestination(
  out: NodeJS.WritableStream,
  color: boolean,
): { write(chunk: string): boolean } {
  let buffered = "";
  return {
    write(chunk) {
      buffered += chunk;
      let nl = buffered.indexOf("\n");
      while (nl >= 0) {
        out.write(prettyLogLine(buffered.slice(0, nl), color));
        buffered = buffered.slice(nl + 1);
        nl = buffered.indexOf("\n");
      }
      return true;
    },
  };
}
