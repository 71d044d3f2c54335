// The server certificates a client refuses: the revoked ones a control
// plane last told it of, kept in a file so that a later process refuses them
// before it has heard anything. An agent keeps the list its stream's Welcome
// and RevokedServerCertificates messages carry, in its directory; hvctl keeps
// one list per cluster CA in its state file, taken with
// ListRevokedServerCertificates. A stolen server certificate and key,
// revoked, no longer pass as the control plane (docs/security.md).
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname } from "node:path";
import type { PeerCertificate } from "node:tls";
import { type Clock, type Logger, serialKey, systemClock } from "../core/index.js";
import { finishFileSet, writeLockedFileSet } from "./file-set.js";
import { lockFileSet } from "./file-set-lock.js";

/** The list's file in an agent's directory. */
export const REVOKED_SERVERS_FILE = "revoked-servers.json";

/**
 * The most lists a file of several keeps (hvctl's: one per cluster it
 * talked to); past it, the lists taken longest ago are dropped.
 */
export const MAX_REVOKED_SERVER_LISTS = 64;

/** A list of revoked server certificates as a control plane sends it. */
export interface RevokedServerList {
  readonly serials: readonly string[];
}

/** The revoked server certificates, in memory and in a file. */
export interface RevokedServers {
  has(serial: string): boolean;
  /**
   * Replaces the list (the control plane sends it whole), at once in
   * memory; resolves once it is in the file with the time it was taken,
   * written each time, so the file tells how old its list is (a failed
   * write is logged, and made again with the next list).
   */
  replace(serials: readonly string[]): Promise<void>;
  /**
   * When the list in use was taken from a control plane (ms since the
   * epoch, the clock's); undefined when it never was: no file, an unreadable
   * one, none kept for this scope, or one an older version wrote.
   */
  takenAt(): number | undefined;
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
  /**
   * Which of the file's lists this is, each replaced on its own (hvctl's:
   * one per cluster CA, as `sha256:HEX`): the file keeps several, at most
   * {@link MAX_REVOKED_SERVER_LISTS}. Absent: the file holds this list
   * alone (an agent's directory).
   */
  readonly scope?: string;
  /**
   * Other lists of the file refused too, by their scope (hvctl: those of the same CA taken
   * from other servers: a serial is one certificate of that CA, revoked whoever told it).
   * Read when opened; only this scope's list is replaced.
   */
  readonly alsoRefuse?: (scope: string) => boolean;
  /** The time a list is taken at (default the system clock). */
  readonly clock?: Clock;
}

/** One list as the file holds it. */
interface KeptList {
  readonly serials: ReadonlySet<string>;
  readonly takenAt: number | undefined;
}

const NONE: KeptList = { serials: new Set(), takenAt: undefined };

/**
 * The list kept in `options.path`, read from the file (an interrupted write
 * completed first). A missing file is an empty list; an unreadable one too,
 * logged once: the control plane's next list replaces it. The file is
 * written 0644, its folder made 0700 when missing.
 */
export function openRevokedServers(options: RevokedServersOptions): RevokedServers {
  const { path, log, scope } = options;
  const clock = options.clock ?? systemClock;
  let kept = read(path, scope, log);
  const others =
    scope === undefined || options.alsoRefuse === undefined
      ? new Set<string>()
      : otherSerials(path, scope, options.alsoRefuse);
  /** Writes one after another: an older list never lands over a newer one. */
  let writing = Promise.resolve();
  const revoked: RevokedServers = {
    has: (serial) => kept.serials.has(serialKey(serial)) || others.has(serialKey(serial)),
    takenAt: () => kept.takenAt,
    replace(list) {
      const next: KeptList = { serials: new Set(list.map(serialKey)), takenAt: clock.now() };
      kept = next;
      writing = writing
        .then(() => write(path, scope, next))
        .catch((err: unknown) => {
          log.error(
            { err: withoutContent(err), path },
            "revoked server certificates not written; kept in memory",
          );
        });
      return writing;
    },
    guard(server, refusals = log) {
      let presented: string | undefined;
      return {
        verify(cert) {
          presented = serialKey(cert.serialNumber);
          if (!revoked.has(presented)) return undefined;
          refusals.error(
            { server, serverCertificate: presented },
            "refused the control plane: its certificate is revoked",
          );
          return new Error(`the control plane's certificate ${presented} is revoked`);
        },
        learn(list) {
          if (list === undefined) return false;
          void revoked.replace(list.serials);
          if (presented === undefined || !revoked.has(presented)) return false;
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

function read(path: string, scope: string | undefined, log: Logger): KeptList {
  try {
    finishFileSet(path);
    if (!existsSync(path)) return NONE;
    const doc: unknown = JSON.parse(readFileSync(path, "utf8"));
    if (scope === undefined) return keptList(doc);
    const lists = listsOf(doc);
    return Object.hasOwn(lists, scope) ? keptList(lists[scope]) : NONE;
  } catch (err) {
    log.error(
      { err: withoutContent(err), path },
      "revoked server certificates unreadable; starting with none",
    );
    return NONE;
  }
}

/**
 * `err` without the file's text: a JSON parse error quotes the start of the file, which a
 * path set by mistake (a token file) would print.
 */
function withoutContent(err: unknown): unknown {
  return err instanceof SyntaxError ? new Error("not valid JSON") : err;
}

/** The serials of the file's lists other than `scope`'s that `wanted` names (none if unreadable). */
function otherSerials(path: string, scope: string, wanted: (s: string) => boolean): Set<string> {
  const out = new Set<string>();
  try {
    if (!existsSync(path)) return out;
    const lists = listsOf(JSON.parse(readFileSync(path, "utf8")));
    for (const [other, entry] of Object.entries(lists))
      if (other !== scope && wanted(other))
        for (const serial of keptList(entry).serials) out.add(serial);
  } catch {
    // Unreadable: told when this scope's list was read.
  }
  return out;
}

/** The lists of a file of several, by scope; throws when `doc` is not one. */
function listsOf(doc: unknown): Record<string, unknown> {
  if (typeof doc !== "object" || doc === null || Array.isArray(doc))
    throw new Error("not an object");
  const lists = (doc as { lists?: unknown }).lists;
  if (lists === undefined) return {};
  if (typeof lists !== "object" || lists === null || Array.isArray(lists))
    throw new Error("lists: not an object");
  return lists as Record<string, unknown>;
}

/** One list from the file; throws when it is not one. */
function keptList(entry: unknown): KeptList {
  const e = entry as { serials?: unknown; takenAt?: unknown } | null;
  if (!Array.isArray(e?.serials)) throw new Error("no serials list");
  const at = typeof e.takenAt === "string" ? Date.parse(e.takenAt) : Number.NaN;
  return {
    serials: new Set(e.serials.filter((s): s is string => typeof s === "string").map(serialKey)),
    takenAt: Number.isFinite(at) ? at : undefined,
  };
}

/** The file's form of a list. */
const listJson = (list: KeptList) => ({
  serials: [...list.serials],
  takenAt: new Date(list.takenAt ?? 0).toISOString(),
});

/**
 * Writes `list` into the file: the whole file, or its entry for `scope`
 * beside the others, read again under the file's lock so another process's
 * list written meanwhile is kept. A file that is not one of lists (it does
 * not even start as one) is never replaced (an agent's own list, unscoped,
 * is written anew).
 */
async function write(path: string, scope: string | undefined, list: KeptList): Promise<void> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const unlock = await lockFileSet(path);
  try {
    let doc: object = listJson(list);
    if (scope !== undefined) {
      let lists: Record<string, unknown> = {};
      finishFileSet(path);
      if (existsSync(path)) {
        const text = readFileSync(path, "utf8");
        try {
          lists = listsOf(JSON.parse(text));
        } catch {
          // A file of lists that no longer reads is written anew (its lists are lost already,
          // told when it was opened); any other file (a path set by mistake: hvctl's own
          // configuration, a token file) is left as it is, and the list kept in memory.
          if (!text.trimStart().startsWith('{"lists"'))
            throw new Error("not a file of revoked server certificate lists; left as it is");
        }
      }
      doc = { lists: newest({ ...lists, [scope]: listJson(list) }) };
    }
    writeLockedFileSet([{ path, text: `${JSON.stringify(doc)}\n`, mode: 0o644 }]);
  } finally {
    unlock();
  }
}

/** At most {@link MAX_REVOKED_SERVER_LISTS} of `lists`, those taken last. */
function newest(lists: Record<string, unknown>): Record<string, unknown> {
  const entries = Object.entries(lists);
  if (entries.length <= MAX_REVOKED_SERVER_LISTS) return lists;
  const at = (v: unknown) => {
    const t = Date.parse(String((v as { takenAt?: unknown } | null)?.takenAt));
    return Number.isFinite(t) ? t : 0;
  };
  return Object.fromEntries(
    entries.sort(([, a], [, b]) => at(b) - at(a)).slice(0, MAX_REVOKED_SERVER_LISTS),
  );
}
