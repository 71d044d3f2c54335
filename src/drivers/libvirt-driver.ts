/**
 * The libvirt driver: one node's hypervisor reached through `virsh -c URI`.
 *
 * Every call validates its identifiers first (refused input runs nothing),
 * then runs virsh with an argument array under `LC_ALL=C`, a timeout and the
 * caller's AbortSignal. Domains are always named with `--domain NAME`, never
 * positionally. Failures map to catalogue reasons by exit status and stderr;
 * the command line and stderr go only into the error's `cause`, for logs.
 *
 * Migration runs `virsh migrate --verbose` and turns its `Migration: [ 45 %]`
 * stderr lines (plus `domjobinfo` figures when the backend has them) into
 * progress reports. Aborting a migration interrupts virsh (SIGINT: virsh
 * aborts the job itself, SIGKILL after a grace) and runs `virsh domjobabort`,
 * so libvirt rolls back and the domain keeps running on this node.
 *
 * With `rbdFencing`, a cold start under a placement generation first takes
 * the lock of each RBD disk in the domain's XML for that generation
 * (STALE_GENERATION, nothing started, when a newer one holds it).
 *
 * By default each call is its own virsh process (its own connection); pass a
 * `runner` from {@link createVirshSession} to keep one connection instead.
 */

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import {
  abortError,
  checkString,
  ID_HINT,
  ID_PATTERN,
  type Logger,
  RpcError,
  silentLogger,
  throwIfAborted,
} from "../core/index.js";
import { DatasetRefSchema, StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import { abortableSleep } from "./abortable-sleep.js";
import { type CommandResult, type CommandRunner, runCommand } from "./command-runner.js";
import type {
  DefiningDriver,
  DomainSpec,
  DomainState,
  DomainStatus,
  DriverCapabilities,
  JobAbortingDriver,
  MigrateOptions,
  MigrationDestination,
  StartOptions,
} from "./hypervisor-driver.js";
import { domainXml } from "./libvirt-domain-xml.js";
import { checkMigrationUri, checkVmId, isDomainName, isLibvirtUri } from "./libvirt-identifiers.js";
import { createProgressReporter } from "./migration-progress.js";
import type { RbdFencing } from "./rbd-fencing.js";
import { createVirshInvoker, isRace, VirshCommandError } from "./virsh-invoker.js";
import {
  parseDominfo,
  parseDomjobinfo,
  parseDomstate,
  parseMigrationProgress,
  parseNameList,
  parseRbdDiskSources,
} from "./virsh-parse.js";

/** Options of {@link createLibvirtDriver}. */
export interface LibvirtDriverOptions {
  /** The node this driver drives (the id rule of the API). */
  readonly nodeId: string;
  /** The node's libvirt connection URI, for example `qemu:///system` or `test:///default`. */
  readonly uri: string;
  /** The virsh program (default `virsh`, found on PATH). */
  readonly virsh?: string;
  /** Limit of one ordinary command (default 30 s). */
  readonly timeoutMs?: number;
  /** Limit of one migration (default 30 min); past it the job is aborted. */
  readonly migrateTimeoutMs?: number;
  /** How long a graceful stop waits for the guest to power off (default 120 s). */
  readonly shutdownTimeoutMs?: number;
  /** Interval of state polls while a graceful stop waits (default 1 s). */
  readonly pollIntervalMs?: number;
  /** How long an interrupted migrating virsh gets before SIGKILL (default 10 s). */
  readonly abortGraceMs?: number;
  /**
   * What the backend can do. Default: nothing for `test:` URIs (libvirt's
   * test driver cannot migrate), live and offline migration otherwise.
   */
  readonly capabilities?: DriverCapabilities;
  /**
   * Migrate peer to peer (`--p2p`): this node's libvirtd connects to the
   * destination itself. What a node agent does, since its virsh talks only
   * to the local hypervisor (default false: the client connects to both).
   */
  readonly peerToPeer?: boolean;
  /** Runs virsh (default: a process per call); tests replay recorded output through it. */
  readonly runner?: CommandRunner;
  /** Where warnings go (domains whose names the driver cannot address). */
  readonly logger?: Logger;
  /**
   * Storage fencing of the domains' RBD disks: a start under a placement
   * generation first takes each RBD image's lock for that generation
   * ({@link RbdFencing.takeOver}). Absent: RBD disks are not fenced.
   */
  readonly rbdFencing?: RbdFencing;
}

type Settings = Required<Omit<LibvirtDriverOptions, "capabilities" | "rbdFencing">> & {
  readonly capabilities: DriverCapabilities;
};

/** Domains described by dominfo at once while listing. */
const LIST_CONCURRENCY = 4;

function positive(value: number | undefined, fallback: number, name: string): number {
  const v = value ?? fallback;
  if (!Number.isInteger(v) || v <= 0) throw new TypeError(`${name} must be a positive integer`);
  return v;
}

/** Validates options once into a frozen, fully defaulted object. */
function settle(options: LibvirtDriverOptions): Settings {
  if (!ID_PATTERN.test(options.nodeId)) throw new TypeError(`nodeId must be ${ID_HINT}`);
  if (!isLibvirtUri(options.uri)) throw new TypeError("uri must be a libvirt connection URI");
  const virsh = options.virsh ?? "virsh";
  if (virsh === "" || virsh.startsWith("-")) throw new TypeError("virsh must be a program path");
  const migrates = !options.uri.startsWith("test:");
  return Object.freeze({
    nodeId: options.nodeId,
    uri: options.uri,
    virsh,
    timeoutMs: positive(options.timeoutMs, 30_000, "timeoutMs"),
    migrateTimeoutMs: positive(options.migrateTimeoutMs, 30 * 60_000, "migrateTimeoutMs"),
    shutdownTimeoutMs: positive(options.shutdownTimeoutMs, 120_000, "shutdownTimeoutMs"),
    pollIntervalMs: positive(options.pollIntervalMs, 1000, "pollIntervalMs"),
    abortGraceMs: positive(options.abortGraceMs, 10_000, "abortGraceMs"),
    peerToPeer: options.peerToPeer ?? false,
    capabilities: Object.freeze({
      ...(options.capabilities ?? { liveMigration: migrates, offlineMigration: migrates }),
    }),
    runner: options.runner ?? runCommand,
    logger: options.logger ?? silentLogger,
  });
}

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

/** Creates the driver of one libvirt node. Throws TypeError on bad options. */
export function createLibvirtDriver(
  options: LibvirtDriverOptions,
): DefiningDriver & JobAbortingDriver {
  const s = settle(options);
  const log = s.logger.child({ driver: "libvirt", nodeId: s.nodeId });
  const { run: virsh, parsed } = createVirshInvoker(s);

  async function domstate(vmId: string, signal: AbortSignal): Promise<DomainState> {
    const args = ["domstate", "--domain", vmId];
    return parsed(args, await virsh(args, signal), parseDomstate);
  }

  async function info(vmId: string, signal: AbortSignal): Promise<DomainStatus | undefined> {
    checkVmId(vmId);
    throwIfAborted(signal);
    const args = ["dominfo", "--domain", vmId];
    let result: CommandResult;
    try {
      result = await virsh(args, signal);
    } catch (e) {
      if (e instanceof RpcError && e.reason === "VM_NOT_FOUND") return undefined;
      throw e;
    }
    const d = parsed(args, result, parseDominfo);
    return {
      id: vmId,
      state: d.state,
      vcpus: d.vcpus,
      memoryBytes: d.maxMemoryBytes,
      persistent: d.persistent,
    };
  }

  async function list(signal: AbortSignal): Promise<DomainStatus[]> {
    throwIfAborted(signal);
    const args = ["list", "--all", "--name"];
    const names = parsed(args, await virsh(args, signal), parseNameList);
    const usable = names.filter((name) => {
      if (isDomainName(name)) return true;
      log.warn({ domain: name }, "libvirt domain name outside the vm id rules; not listed");
      return false;
    });
    usable.sort();
    const out: DomainStatus[] = [];
    for (let i = 0; i < usable.length; i += LIST_CONCURRENCY) {
      const batch = await Promise.all(
        usable.slice(i, i + LIST_CONCURRENCY).map((name) => info(name, signal)),
      );
      // A domain undefined between list and dominfo is simply gone.
      for (const d of batch) if (d !== undefined) out.push(d);
    }
    return out;
  }

  /**
   * Takes the lock of each RBD disk of `vmId` for `generation` (blocklisting
   * the clients of an older holder first); STALE_GENERATION when a disk is
   * held under this generation or a newer one elsewhere. Runs no rbd
   * command for a domain without RBD disks.
   */
  async function fenceRbdDisks(vmId: string, generation: bigint, signal: AbortSignal) {
    const fencing = options.rbdFencing;
    if (fencing === undefined || generation <= 0n) return;
    const args = ["dumpxml", "--domain", vmId];
    const disks = parsed(args, await virsh(args, signal), parseRbdDiskSources);
    for (const d of disks) {
      const image = create(DatasetRefSchema, { backend: StorageBackend.BACKEND_RBD, ...d });
      const { blocklisted } = await fencing.takeOver(image, s.nodeId, generation, signal);
      if (blocklisted.length > 0)
        log.warn(
          { vm: vmId, image: `${d.pool}/${d.name}`, generation: String(generation), blocklisted },
          "blocklisted the previous clients of an rbd disk before starting",
        );
    }
  }

  async function start(vmId: string, signal: AbortSignal, opts?: StartOptions): Promise<void> {
    checkVmId(vmId);
    throwIfAborted(signal);
    const state = await domstate(vmId, signal);
    if (state === "running") return;
    // A paused domain here already has its disks open: only a cold start takes them over.
    if (state === "stopped") await fenceRbdDisks(vmId, opts?.generation ?? 0n, signal);
    try {
      await virsh([state === "paused" ? "resume" : "start", "--domain", vmId], signal);
    } catch (e) {
      // Started by someone else in between: the wanted state holds.
      if (!isRace(e, /already (active|running)/i)) throw e;
    }
  }

  async function stop(
    vmId: string,
    options: { force: boolean; signal: AbortSignal },
  ): Promise<void> {
    const { force, signal } = options;
    checkVmId(vmId);
    throwIfAborted(signal);
    if ((await domstate(vmId, signal)) === "stopped") return;
    try {
      await virsh([force ? "destroy" : "shutdown", "--domain", vmId], signal);
    } catch (e) {
      // Stopped by itself or by someone else in between.
      if (!isRace(e, /not running|is not active|domain is not active/i)) throw e;
    }
    // shutdown only asks the guest; wait until it is off (a transient domain vanishes).
    const polls = Math.ceil(s.shutdownTimeoutMs / s.pollIntervalMs);
    for (let i = 0; i <= polls; i++) {
      let state: DomainState;
      try {
        state = await domstate(vmId, signal);
      } catch (e) {
        if (e instanceof RpcError && e.reason === "VM_NOT_FOUND") return;
        throw e;
      }
      if (state === "stopped") return;
      if (i < polls) await abortableSleep(s.pollIntervalMs, signal);
    }
    throw new RpcError("BACKEND_TIMEOUT", {
      cause: new Error(`${vmId} still running ${s.shutdownTimeoutMs} ms after shutdown`),
    });
  }

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

  /**
   * `virsh define --file` of the spec's domain XML, written to a private
   * temporary file. libvirt here attaches existing datasets only: a new
   * disk is DEFINE_UNSUPPORTED (create the dataset through storage first).
   */
  async function define(spec: DomainSpec, signal: AbortSignal): Promise<void> {
    checkVmId(spec.id);
    throwIfAborted(signal);
    if (spec.disks.some((d) => d.sizeBytes > 0n))
      throw new RpcError("DEFINE_UNSUPPORTED", {
        message: "libvirt nodes attach existing datasets only; create the disk first",
      });
    if ((await info(spec.id, signal)) !== undefined) throw new RpcError("VM_EXISTS");
    const dir = mkdtempSync(join(tmpdir(), "dv-define-"));
    try {
      const file = join(dir, "domain.xml");
      writeFileSync(file, domainXml(spec, s.uri.startsWith("test:") ? "test" : "kvm"), {
        mode: 0o600,
      });
      await virsh(["define", "--file", file], signal);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  /** `virsh undefine`; a running domain is refused unless forced (`destroy` first). */
  async function undefine(
    vmId: string,
    options: { force: boolean; signal: AbortSignal },
  ): Promise<void> {
    checkVmId(vmId);
    throwIfAborted(options.signal);
    const state = await domstate(vmId, options.signal);
    if (state !== "stopped") {
      if (!options.force) throw new RpcError("VM_RUNNING");
      await stop(vmId, { force: true, signal: options.signal });
    }
    await virsh(["undefine", "--domain", vmId], options.signal);
  }

  return Object.freeze({
    kind: "libvirt",
    nodeId: s.nodeId,
    capabilities: s.capabilities,
    list,
    info,
    start,
    stop,
    migrate,
    define,
    undefine,
    async abortJob(vmId: string, signal: AbortSignal) {
      checkVmId(vmId);
      throwIfAborted(signal);
      await abortJob(vmId);
    },
  });
}
