/*
 * hvctl's check of the control plane's certificate against the revoked
 * server certificates it keeps (docs/security.md): a stolen server
 * certificate and key, once revoked, no longer pass as the control plane,
 * so no credential is sent to the thief. The list is kept per cluster CA and
 * server address in one file (every list of the CA refused) and taken from the control plane with
 * ListRevokedServerCertificates when it is missing or older than
 * {@link REFRESH_AFTER_MS}, so most commands cost no extra call.
 */
import { isAbsolute, join } from "node:path";
import type { PeerCertificate } from "node:tls";
import { openRevokedServers, REVOKED_SERVERS_FILE } from "../client/index.js";
import { type Clock, type Logger, serialKey, silentLogger, systemClock } from "../core/index.js";

/** How old a kept list may be before a command takes it again. */
export const REFRESH_AFTER_MS = 5 * 60_000;

/**
 * The file of hvctl's lists: `configured` (the configuration file's
 * `revokedServersFile`, already resolved), else
 * `$XDG_STATE_HOME/debvisor/revoked-servers.json` (an absolute
 * XDG_STATE_HOME only, as the XDG specification says), else
 * `~/.local/state/debvisor/revoked-servers.json`.
 */
export function revokedServersPath(
  configured: string | undefined,
  env: NodeJS.ProcessEnv,
  home: string,
): string {
  if (configured !== undefined) return configured;
  const state = env.XDG_STATE_HOME;
  const base = state !== undefined && isAbsolute(state) ? state : join(home, ".local", "state");
  return join(base, "debvisor", REVOKED_SERVERS_FILE);
}

/** One cluster's check, for the channels of one hvctl command. */
export interface ServerCheck {
  /** For openChannel's `verifyServer`: an Error refuses a server presenting a revoked certificate. */
  verify(cert: PeerCertificate): Error | undefined;
  /** The serial of the revoked certificate a server presented, once one has. */
  refused(): string | undefined;
  /**
   * Whether the kept list is missing, unreadable or older than
   * {@link REFRESH_AFTER_MS}, or this command revoked a server certificate.
   */
  due(): boolean;
  /**
   * A server certificate this command revoked: the list is taken again as
   * the command ends, with `serial` on it (the control plane's own list is
   * made again shortly after a revocation, and may not have it yet).
   */
  revokedHere(serial: string): void;
  /**
   * Replaces the kept list with the one `fetch` answers. A failure (an older
   * daemon answering UNIMPLEMENTED, a timeout, anything) leaves the list as
   * it is and is not told: the command's outcome never depends on it.
   */
  refresh(fetch: () => Promise<readonly string[]>): Promise<void>;
}

/** Options of {@link openServerCheck}. */
export interface ServerCheckOptions {
  /** The file ({@link revokedServersPath}). */
  readonly path: string;
  /** The cluster: its CA's fingerprint (`sha256:hex`). */
  readonly scope: string;
  /** The address connected to: its list is kept apart from other servers' of the CA. */
  readonly server: string;
  /** stderr: an unreadable or unwritable file is told there, once. */
  readonly err: (text: string) => void;
  readonly clock?: Clock;
}

/** Opens the kept list of `options.scope` and its check. */
export function openServerCheck(options: ServerCheckOptions): ServerCheck {
  const clock = options.clock ?? systemClock;
  // A list per CA and server: two clusters whose servers share a CA (an organisation's) keep
  // one each, so one's list never replaces the other's; every list of the CA is refused.
  const kept = openRevokedServers({
    path: options.path,
    log: fileProblems(options.err),
    scope: `${options.scope} ${options.server}`,
    alsoRefuse: (other) => other.startsWith(`${options.scope} `),
    clock,
  });
  // The refusal is the command's own one-line error (cli-errors.ts), not a log line.
  const guard = kept.guard(options.server, silentLogger);
  let refused: string | undefined;
  const revokedHere = new Set<string>();
  return {
    verify(cert) {
      const problem = guard.verify(cert);
      if (problem !== undefined) refused = guard.presented();
      return problem;
    },
    refused: () => refused,
    due() {
      if (revokedHere.size > 0) return true;
      const at = kept.takenAt();
      const now = clock.now();
      // A time ahead of now: the clock was set back since; take the list again.
      return at === undefined || now - at >= REFRESH_AFTER_MS || at > now;
    },
    revokedHere(serial) {
      revokedHere.add(serialKey(serial));
    },
    async refresh(fetch) {
      let serials: readonly string[];
      try {
        serials = await fetch();
      } catch {
        return;
      }
      await kept.replace([...new Set([...serials, ...revokedHere])]);
    },
  };
}

/** The kept list's file problems as hvctl notes on stderr. */
function fileProblems(err: (text: string) => void): Logger {
  const note = (obj: object, msg?: string) => {
    const { err: cause, path } = obj as { err?: unknown; path?: unknown };
    const why = cause instanceof Error ? `: ${cause.message}` : "";
    err(`hvctl: note: ${msg ?? "revoked server certificates"} (${String(path)}${why})\n`);
  };
  const logger: Logger = {
    debug() {},
    info() {},
    warn: note,
    error: note,
    child: () => logger,
  };
  return logger;
}
