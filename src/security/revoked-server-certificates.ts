// The server certificates agents must refuse: the revoked ones that have
// not expired, as this daemon's copy of the revocations shows them, for the
// agents' streams (Welcome and RevokedServerCertificates).
import type { Clock, Logger } from "../core/index.js";
import type { CertificateLedger } from "./certificate-ledger.js";
import type { Revocations } from "./revocations.js";

/** The most serials told to agents: newest revocations first, the oldest left out past it. */
export const MAX_REVOKED_SERVER_CERTIFICATES = 1000;
/** Revocations arriving together (a chain revoked serial by serial) make one new list. */
const SETTLE_MS = 100;

/** The revoked, unexpired server certificates, kept current. */
export interface RevokedServerCertificates {
  /**
   * Serials (lower-case hex), newest revocation first, at most {@link
   * MAX_REVOKED_SERVER_CERTIFICATES}; undefined until the ledger could be
   * read once (an empty list then would wipe the agents' own).
   */
  current(): readonly string[] | undefined;
  /** Called with the new list whenever it changes; returns the function that stops it. */
  onChange(listener: (serials: readonly string[]) => void): () => void;
  /** Makes the list again soon (the certificate this daemon serves changed). */
  refresh(): void;
  close(): void;
}

/** A revoked serial as the list weighs it. */
export interface RevokedEntry {
  readonly serial: string;
  readonly revokedAtMs: number;
  /** From the ledger: undefined when the ledger holds no record of the serial. */
  readonly kind?: string;
  /** Undefined also when its record holds no end (0: recorded by a renewal from outside the ledger). */
  readonly notAfterMs?: number;
}

/**
 * The serials agents are told to refuse: revoked certificates that are not
 * client certificates (server ones, and those of unknown kind: revoked
 * serials the ledger does not know, since a certificate from before the
 * ledger may be a server's) and not expired at `nowMs`; newest revocation
 * first, at most `max` of them. Past the bound the oldest revocations are
 * left out rather than any refused: an agent must still reach the control
 * plane (docs/security.md).
 */
export function revokedServerSerials(
  entries: Iterable<RevokedEntry>,
  nowMs: number,
  max = MAX_REVOKED_SERVER_CERTIFICATES,
): string[] {
  return [...entries]
    .filter((e) => e.kind !== "client" && (e.notAfterMs === undefined || e.notAfterMs > nowMs))
    .sort((a, b) => b.revokedAtMs - a.revokedAtMs || a.serial.localeCompare(b.serial))
    .slice(0, max)
    .map((e) => e.serial);
}

/**
 * `serials` without the certificates served now: `own` (this daemon's) and
 * those of `live` daemons (runner id by serial), each logged as an error.
 */
function leaveOutServed(
  serials: readonly string[],
  own: string | undefined,
  live: ReadonlyMap<string, string> | undefined,
  logger: Logger,
): string[] {
  return serials.filter((serial) => {
    if (serial === own)
      logger.error(
        { serial },
        "this daemon serves a revoked certificate: agents are not told to refuse it until it is replaced",
      );
    else if (live?.has(serial) === true)
      logger.error(
        { serial, runner: live.get(serial) },
        "a live control-plane daemon serves a revoked certificate: agents are not told to refuse it until it is replaced or that daemon stops",
      );
    else return true;
    return false;
  });
}

/**
 * Follows `revocations` (this daemon's copy, kept current by a watch) and
 * reads the ledger for each change: the list is made again, and listeners
 * told when it differs. An expired certificate leaves the list at the next
 * change (until then it is one serial too many, never one too few). A read
 * of the ledger that fails keeps the last list and is logged; the next
 * change tries again.
 */
export async function followRevokedServerCertificates(options: {
  readonly revocations: Revocations;
  readonly ledger: CertificateLedger;
  readonly clock: Clock;
  readonly logger: Logger;
  /**
   * The serial of the certificate this daemon serves now. Left out of the
   * list while it is served: told it, the agents connected here would drop
   * their streams and refuse this daemon, and with no control plane their
   * HA VMs self-fence, cluster-wide, over a revocation this daemon could
   * not yet answer with a new certificate (no CA key, a failed renewal).
   */
  readonly serving?: () => string | undefined;
  /**
   * The serials the live control-plane daemons serve (runner id by serial,
   * as each publishes its own), left out for the same reason: agents moved
   * here from a daemon serving one could not go back to it. Call `refresh()`
   * when they change.
   */
  readonly liveServing?: () => ReadonlyMap<string, string>;
}): Promise<RevokedServerCertificates> {
  const { revocations, ledger, clock, logger } = options;
  const listeners = new Set<(serials: readonly string[]) => void>();
  let list: readonly string[] | undefined;
  let closed = false;
  const build = async () => {
    const revoked = revocations.revoked();
    const entries: RevokedEntry[] = [];
    const known = new Set<string>();
    for await (const r of ledger.list()) {
      const revokedAtMs = revoked.get(r.serial);
      if (revokedAtMs === undefined) continue;
      known.add(r.serial);
      entries.push({
        serial: r.serial,
        revokedAtMs,
        kind: r.kind,
        // Not expired, but unknown: a certificate issued outside the ledger is recorded without
        // its end when it renews, and still authenticates until that end.
        notAfterMs: r.notAfterMs > 0n ? Number(r.notAfterMs) : undefined,
      });
    }
    for (const [serial, revokedAtMs] of revoked)
      if (!known.has(serial)) entries.push({ serial, revokedAtMs });
    const serials = revokedServerSerials(entries, clock.now());
    return leaveOutServed(serials, options.serving?.(), options.liveServing?.(), logger);
  };
  const refresh = async () => {
    try {
      const next = await build();
      const same = list?.length === next.length && next.every((s, i) => s === list?.[i]);
      if (closed || same) return;
      list = next;
      for (const l of listeners) l(next);
    } catch (err) {
      logger.error({ err }, "revoked server certificates not read; agents keep the last list");
    }
  };
  await refresh();
  let timer: NodeJS.Timeout | undefined;
  // One refresh at a time (a slower read finishing last never puts an older list back), and at
  // most one waiting behind it: the changes made during a read of the whole ledger are all
  // taken by the one read after it, not by one read each (a burst left a backlog of reads).
  let running = false;
  let again = false;
  const run = async () => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    do {
      again = false;
      if (!closed) await refresh();
    } while (again);
    running = false;
  };
  const soon = () => {
    if (closed || timer !== undefined) return;
    timer = setTimeout(() => {
      timer = undefined;
      void run();
    }, SETTLE_MS);
  };
  const stop = revocations.onChange(soon);
  return {
    current: () => list,
    refresh: soon,
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    close() {
      closed = true;
      stop();
      if (timer !== undefined) clearTimeout(timer);
    },
  };
}
