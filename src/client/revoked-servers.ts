// The server certificates a client refuses: the revoked ones a control
// plane last told it of, kept in a file so that a later process refuses them
// before it has heard anything (an agent's: the list its stream's Welcome and
// RevokedServerCertificates messages carry, in its directory). A stolen
// server certificate and key, revoked, no longer pass as the control plane
// (docs/security.md).
import { existsSync, readFileSync } from "node:fs";
import type { PeerCertificate } from "node:tls";
import { type Logger, serialKey } from "../core/index.js";
import { finishFileSet, writeFileSet } from "./file-set.js";

/** The list's file in an agent's directory. */
export const REVOKED_SERVERS_FILE = "revoked-servers.json";

/** A list of revoked server certificates as a control plane sends it. */
export interface RevokedServerList {
  readonly serials: readonly string[];
}

/** The revoked server certificates, in memory and in a file. */
export interface RevokedServers {
  has(serial: string): boolean;
  /**
   * Replaces the list (the control plane sends it whole), at once in
   * memory; resolves once it is in the file (a failed write is logged, and
   * made again with the next list, the same or not).
   */
  replace(serials: readonly string[]): Promise<void>;
  /** The check of one connection to `server`; a refusal is logged to `log` (default the list's). */
  guard(server: string, log?: Logger): ServerGuard;
}

/** One connection's check of the certificate its server presents. */
export interface ServerGuard {
  /** For the TLS handshake: an Error refuses the server (logged). */
  verify(cert: PeerCertificate): Error | undefined;
  /**
   * Takes a list the server sent (`undefined`: it sent none, an older
   * server); true when the certificate this connection's server presented
   * is on it now (logged): the caller ends the stream and reconnects.
   */
  learn(list: RevokedServerList | undefined): boolean;
  /** The serial of the certificate the server presented, once it has. */
  presented(): string | undefined;
}

/** Options of {@link openRevokedServers}. */
export interface RevokedServersOptions {
  /** The file (an agent's: {@link REVOKED_SERVERS_FILE} in its directory). */
  readonly path: string;
  /** Where a file that cannot be read or written is told. */
  readonly log: Logger;
}

/**
 * The list kept in `options.path`, read from the file (an interrupted write
 * completed first). A missing file is an empty list; an unreadable one too,
 * logged: the control plane's next list replaces it.
 */
export function openRevokedServers(options: RevokedServersOptions): RevokedServers {
  const { path, log } = options;
  let serials = new Set(read(path, log));
  /** Writes one after another: an older list never lands over a newer one. */
  let writing = Promise.resolve();
  /** The last write failed: the file may hold an older list, so the next list is written even if the same. */
  let unwritten = false;
  const revoked: RevokedServers = {
    has: (serial) => serials.has(serialKey(serial)),
    replace(list) {
      const next = new Set(list.map(serialKey));
      const same = next.size === serials.size && [...next].every((s) => serials.has(s));
      if (same && !unwritten) return writing;
      serials = next;
      const text = `${JSON.stringify({ serials: [...next] })}\n`;
      writing = writing
        .then(() => writeFileSet([{ path, text, mode: 0o644 }]))
        .then(
          () => {
            unwritten = false;
          },
          (err: unknown) => {
            unwritten = true;
            log.error({ err, path }, "revoked server certificates not written; kept in memory");
          },
        );
      return writing;
    },
    guard(server, refusals = log) {
      let presented: string | undefined;
      return {
        verify(cert) {
          presented = serialKey(cert.serialNumber);
          if (!serials.has(presented)) return undefined;
          refusals.error(
            { server, serverCertificate: presented },
            "refused the control plane: its certificate is revoked",
          );
          return new Error(`the server's certificate ${presented} is revoked`);
        },
        learn(list) {
          if (list === undefined) return false;
          void revoked.replace(list.serials);
          if (presented === undefined || !serials.has(presented)) return false;
          refusals.warn(
            { server, serverCertificate: presented },
            "the control plane's certificate was revoked; reconnecting",
          );
          return true;
        },
        presented: () => presented,
      };
    },
  };
  return revoked;
}

function read(path: string, log: Logger): string[] {
  try {
    finishFileSet(path);
    if (!existsSync(path)) return [];
    const doc = JSON.parse(readFileSync(path, "utf8")) as { serials?: unknown };
    if (!Array.isArray(doc.serials)) throw new Error("no serials list");
    return doc.serials.filter((s): s is string => typeof s === "string").map(serialKey);
  } catch (err) {
    log.error({ err, path }, "revoked server certificates unreadable; starting with none");
    return [];
  }
}
