import { execFile } from "node:child_process";
import type { Logger } from "../core/index.js";

/** Tells systemd about a service's state (Type=notify): the daemon's and the agent's. A no-op when not run by systemd. */
export interface SystemdNotifier {
  /** Serving: sends READY=1 with a status line. */
  ready(status: string): Promise<void>;
  /** Re-reading configuration. */
  reloading(): Promise<void>;
  /** Shutting down. */
  stopping(): Promise<void>;
  /** A new status line (STATUS=), for `systemctl status`. */
  status(status: string): Promise<void>;
  /** Stops watchdog pings. */
  close(): void;
}

/**
 * Sends sd_notify messages through `systemd-notify` (Node has no unix
 * datagram sockets). The unit sets NotifyAccess=all because the sender is a
 * child process; systemd-notify (since v246) waits until systemd has
 * processed the message, so it is never misattributed. Watchdog pings are
 * sent at half of WATCHDOG_USEC when systemd asks for them.
 */
export function createSystemdNotifier(env: NodeJS.ProcessEnv, logger: Logger): SystemdNotifier {
  const socket = env.NOTIFY_SOCKET;
  if (socket === undefined || socket === "") {
    return {
      ready: async () => {},
      reloading: async () => {},
      stopping: async () => {},
      status: async () => {},
      close: () => {},
    };
  }
  const send = (fields: string[]) =>
    new Promise<void>((resolve) => {
      execFile(
        "systemd-notify",
        [`--pid=${process.pid}`, ...fields],
        { env: { NOTIFY_SOCKET: socket, PATH: env.PATH ?? "/usr/bin:/bin" }, timeout: 5000 },
        (err) => {
          if (err) logger.warn({ err, fields }, "systemd notification failed");
          resolve();
        },
      );
    });
  let watchdog: NodeJS.Timeout | undefined;
  const usec = Number(env.WATCHDOG_USEC ?? "");
  const forUs = env.WATCHDOG_PID === undefined || Number(env.WATCHDOG_PID) === process.pid;
  if (Number.isFinite(usec) && usec > 0 && forUs) {
    watchdog = setInterval(() => void send(["WATCHDOG=1"]), Math.max(500, usec / 2000));
    watchdog.unref();
  }
  return {
    ready: (status) => send(["READY=1", `STATUS=${status}`]),
    reloading: () => send(["RELOADING=1", "STATUS=reloading configuration"]),
    stopping: () => send(["STOPPING=1", "STATUS=draining calls"]),
    status: (status) => send([`STATUS=${status}`]),
    close: () => {
      if (watchdog !== undefined) clearInterval(watchdog);
    },
  };
}
