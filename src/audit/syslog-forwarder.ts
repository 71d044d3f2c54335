// The audit trail's ways to syslog through util-linux `logger`: a long-lived
// forwarder of every durable record, and the loud alarm line sent when the
// trail cannot be written.

import { type ChildProcess, execFile, spawn } from "node:child_process";
import type { Logger } from "../core/index.js";

/**
 * Sends lines to syslog through one long-lived `logger -t debvisor-audit`
 * reading stdin; restarted (at most once a second) if it dies. Best effort:
 * the file is the record, syslog the off-box copy.
 */
export function createSyslogForwarder(log: Logger): (line: string) => void {
  let child: ChildProcess | undefined;
  let lastStart = 0;
  const start = () => {
    lastStart = Date.now();
    const c = spawn("logger", ["-t", "debvisor-audit", "-p", "auth.info"], {
      stdio: ["pipe", "ignore", "ignore"],
    });
    c.on("error", (err) => log.warn({ err }, "audit syslog forwarder failed"));
    c.stdin?.on("error", () => {});
    c.once("exit", () => {
      if (child === c) child = undefined;
    });
    c.unref();
    child = c;
  };
  return (line) => {
    if (child === undefined && Date.now() - lastStart > 1000) start();
    child?.stdin?.write(line);
  };
}

/** The original design's fallback: a line to syslog through util-linux `logger`. */
export function syslogAlarm(log: Logger): (message: string) => void {
  return (message) => {
    execFile(
      "logger",
      ["-t", "debvisor-rpcd", "-p", "auth.crit", message],
      { timeout: 5000 },
      (err) => {
        if (err) log.warn({ err }, "could not send the audit alarm to syslog");
      },
    );
  };
}
