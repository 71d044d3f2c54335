// Migrating a libvirt domain: `virsh migrate --verbose` with its
// `Migration: [ 45 %]` stderr lines (plus `domjobinfo` figures when the
// backend has them) as progress. Aborting interrupts virsh (SIGINT, SIGKILL
// after a grace) and runs `virsh domjobabort`, so libvirt rolls back and the
// domain keeps running on this node.

import {
  abortError,
  checkString,
  ID_HINT,
  ID_PATTERN,
  RpcError,
  throwIfAborted,
} from "../core/index.js";
import type { MigrateOptions, MigrationDestination } from "./hypervisor-driver.js";
import type { LibvirtContext } from "./libvirt-context.js";
import { checkMigrationUri, checkVmId } from "./libvirt-identifiers.js";
import type { LibvirtQueries } from "./libvirt-queries.js";
import { createProgressReporter } from "./migration-progress.js";
import { VirshCommandError } from "./virsh-invoker.js";
import { parseDomjobinfo, parseMigrationProgress } from "./virsh-parse.js";

/**
 * The `virsh migrate` arguments of a migration: live (`--live`, verbose
 * progress, aborted on an I/O error) or offline, always persistent on the
 * destination and undefined here, peer to peer (`--p2p`) when this node's
 * libvirtd is to reach the destination itself. The domain is named with
 * `--domain`, never positionally; callers have checked both names.
 */
export function virshMigrateArgs(
  vmId: string,
  destUri: string,
  options: { live: boolean; peerToPeer: boolean },
): string[] {
  const args = options.live
    ? ["migrate", "--live", "--persistent", "--undefinesource", "--verbose", "--abort-on-error"]
    : ["migrate", "--offline", "--persistent", "--undefinesource"];
  if (options.peerToPeer) args.push("--p2p");
  args.push("--domain", vmId, "--desturi", destUri);
  return args;
}

/** The libvirt driver's migration and its job abort. */
export interface LibvirtMigration {
  /** Migrates `vmId` to `to`, reporting progress; an abort rolls it back (the domain stays here). */
  migrate(vmId: string, to: MigrationDestination, options: MigrateOptions): Promise<void>;
  /** `virsh domjobabort`, run to its end even when the caller has gone; failures only logged. */
  abortJob(vmId: string): Promise<void>;
}

/** Creates migration over the node's virsh and its domstate. */
export function createLibvirtMigration(
  ctx: LibvirtContext,
  domstate: LibvirtQueries["domstate"],
): LibvirtMigration {
  const { s, log, virsh } = ctx;

  /** `virsh domjobabort`, run to its end even when the caller has gone; failures only logged. */
  async function abortJob(vmId: string): Promise<void> {
    try {
      await virsh(["domjobabort", "--domain", vmId], new AbortController().signal);
    } catch (e) {
      // "no job is active" once the migration ended by itself; nothing to roll back then.
      log.warn({ vmId, err: e }, "domjobabort failed");
    }
  }

  async function migrate(
    vmId: string,
    to: MigrationDestination,
    options: MigrateOptions,
  ): Promise<void> {
    const { live, signal, onProgress } = options;
    checkVmId(vmId);
    checkString(to.nodeId, {
      field: "destination.node_id",
      required: true,
      max: 63,
      pattern: ID_PATTERN,
      patternHint: ID_HINT,
    });
    checkMigrationUri(to.uri, "destination.uri");
    throwIfAborted(signal);
    if (to.nodeId === s.nodeId || to.uri === s.uri) {
      throw new RpcError("MIGRATION_NOT_ALLOWED", { message: "destination is the source node" });
    }
    // Existence first (VM_NOT_FOUND), then what this backend and the domain's state allow.
    const state = await domstate(vmId, signal);
    if (live ? !s.capabilities.liveMigration : !s.capabilities.offlineMigration) {
      throw new RpcError("MIGRATION_NOT_ALLOWED", {
        message: `this node cannot migrate ${live ? "live" : "offline"}`,
      });
    }
    // Offline migration copies the definition and leaves a running domain
    // running here: with --undefinesource it would run here and be defined there.
    if (live && state !== "running" && state !== "paused") {
      throw new RpcError("MIGRATION_NOT_ALLOWED", {
        message: "live migration needs the vm running",
      });
    }
    if (!live && state !== "stopped") {
      throw new RpcError("MIGRATION_NOT_ALLOWED", {
        message: "offline migration needs the vm stopped",
      });
    }

    const progress = createProgressReporter(onProgress);
    progress.report("preparing", 0);
    const args = virshMigrateArgs(vmId, to.uri, { live, peerToPeer: s.peerToPeer });

    throwIfAborted(signal);
    const own = new AbortController();
    let rollback: Promise<void> | undefined;
    const onAbort = () => {
      rollback ??= abortJob(vmId);
      own.abort();
    };
    signal.addEventListener("abort", onAbort, { once: true });
    // At most one domjobinfo at a time, asked on each new percentage.
    let querying = false;
    const queryJob = () => {
      if (querying) return;
      querying = true;
      void virsh(["domjobinfo", "--domain", vmId], own.signal)
        .then((r) => progress.job(parseDomjobinfo(r.stdout)))
        .catch(() => {
          // Not every backend reports job figures; the percentage still flows.
        })
        .finally(() => {
          querying = false;
        });
    };
    try {
      await virsh(args, own.signal, {
        timeoutMs: s.migrateTimeoutMs,
        killSignal: "SIGINT",
        killGraceMs: s.abortGraceMs,
        onStderrLine: (line) => {
          const percent = parseMigrationProgress(line);
          if (percent === undefined) return;
          progress.report(percent >= 100 ? "switchover" : "transferring", percent);
          if (percent < 100) queryJob();
        },
      });
    } catch (e) {
      const timedOut = e instanceof RpcError && e.reason === "BACKEND_TIMEOUT";
      if (timedOut) rollback ??= abortJob(vmId);
      await rollback;
      const cause = e instanceof RpcError ? e.cause : undefined;
      const finished =
        cause instanceof VirshCommandError && cause.result?.exitCode === 0 && !timedOut;
      // The abort came after libvirt had finished: the domain has moved, say so.
      if (!finished) throw signal.aborted ? abortError(signal) : e;
    } finally {
      signal.removeEventListener("abort", onAbort);
      progress.close();
      // A job query still running is of no use any more.
      own.abort();
    }
    progress.report("completed", 100, true);
  }

  return { migrate, abortJob };
}
