// The server certificates this agent refuses: the revoked ones the control
// plane last told it of (Welcome, RevokedServerCertificates), kept in its
// directory so a restarted agent refuses them before it has heard anything.
// A stolen server certificate and key, revoked, no longer pass as the
// control plane (docs/security.md).
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { PeerCertificate } from "node:tls";
import { finishFileSet, writeFileSet } from "../client/index.js";
import { type Logger, serialKey } from "../core/index.js";
import type { RevokedServerCertificates } from "../gen/debvisor/v1/agent_pb.js";

/** The list's file in the agent's directory. */
export const REVOKED_SERVERS_FILE = "revoked-servers.json";

/** The revoked server certificates, in memory and in the agent's directory. */
export interface RevokedServers {
  has(serial: string): boolean;
  /**
   * Replaces the list (the control plane sends it whole), at once in
   * memory; resolves once it is in the file (a failed write is logged, and
   * made again with the next list, the same or not).
   */
  replace(serials: readonly string[]): Promise<void>;
  /** The check of one connection to `server`. */
  guard(server: string): ServerGuard;
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
  learn(list: RevokedServerCertificates | undefined): boolean;
  /** The serial of the certificate the server presented, once it has. */
  presented(): string | undefined;
}

/**
 * The list of the agent directory `dir`, read from its file (an interrupted
 * write completed first). A missing file is an empty list; an unreadable
 * one too, logged: the control plane's next Welcome brings the list again.
 */
export function openRevokedServers(dir: string, log: Logger): RevokedServers {
  const path = join(dir, REVOKED_SERVERS_FILE);
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
    guard(server) {
      let presented: string | undefined;
      return {
        verify(cert) {
          presented = serialKey(cert.serialNumber);
          if (!serials.has(presented)) return undefined;
          log.error(
            { server, serverCertificate: presented },
            "refused the control plane: its certificate is revoked",
          );
          return new Error(`the server's certificate ${presented} is revoked`);
        },
        learn(list) {
          if (list === undefined) return false;
          void revoked.replace(list.serials);
          if (presented === undefined || !serials.has(presented)) return false;
          log.warn(
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
