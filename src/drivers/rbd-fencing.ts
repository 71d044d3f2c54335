import { RpcError } from "../core/index.js";
import type { DatasetRef } from "../gen/debvisor/v1/storage_pb.js";
import {
  type CommandRunner,
  type CommandSpec,
  commandFailed,
  createLocalRunner,
  runCommand,
} from "./storage-command.js";
import { backendName } from "./storage-names.js";

/** Options of {@link createRbdFencing}. */
export interface RbdFencingOptions {
  readonly runner?: CommandRunner;
  /** The rbd program (default `rbd`). */
  readonly rbd?: string;
  /** The ceph program (default `ceph`), for `ceph osd blocklist add`. */
  readonly ceph?: string;
  /** Arguments before each subcommand, such as `--id debvisor`. */
  readonly globalArgs?: readonly string[];
  readonly timeoutMs?: number;
}

/** One advisory lock on an image, as `rbd lock list` shows it. */
export interface RbdLocker {
  readonly id: string;
  /** The client holding it (`client.4123`). */
  readonly locker: string;
  /** The client's address (`192.0.2.4:0/3012034728`): what the blocklist takes. */
  readonly address: string;
}

/**
 * RBD storage fencing with a token: the image's advisory lock is named
 * `debvisor-g<generation>-<node>`, so the lock itself records which
 * placement generation owns the disk. Taking over for a newer generation
 * first blocklists every client that has the image open (`rbd status`
 * watchers; `ceph osd blocklist add` makes the OSDs refuse their I/O, so a
 * qemu still running on a cut-off node can no longer write), then removes
 * the older locks and adds ours; `rbd lock add` fails if anyone added one
 * meanwhile. A lock at the same or a newer generation means the VM was
 * placed elsewhere since: STALE_GENERATION, nothing changed. Run before
 * the domain is started on the new node.
 */
export interface RbdFencing {
  takeOver(
    image: DatasetRef,
    node: string,
    generation: bigint,
    signal: AbortSignal,
  ): Promise<{ readonly blocklisted: readonly string[] }>;
}

const EBUSY = 16;
const EEXIST = 17;

/** The lock id of `node` under `generation`. */
export function rbdLockId(generation: bigint, node: string): string {
  return `debvisor-g${generation}-${node}`;
}

/** The generation and node of a lock id we wrote; undefined for anyone else's lock. */
export function parseRbdLockId(id: string): { generation: bigint; node: string } | undefined {
  const m = /^debvisor-g(\d{1,20})-(.+)$/.exec(id);
  return m === null ? undefined : { generation: BigInt(m[1] as string), node: m[2] as string };
}

/**
 * Parses `rbd lock list --format json`: an array of `{id, locker, address}`
 * (Quincy and later) or an object keyed by lock id (older releases).
 */
export function parseRbdLockers(stdout: string): RbdLocker[] {
  const text = stdout.trim() === "" ? "[]" : stdout;
  const parsed = JSON.parse(text) as unknown;
  const entries: [string | undefined, unknown][] = Array.isArray(parsed)
    ? parsed.map((e) => [undefined, e])
    : Object.entries(parsed as Record<string, unknown>);
  return entries.map(([key, value]) => {
    const v = value as Partial<RbdLocker>;
    const id = key ?? v.id;
    if (typeof id !== "string" || typeof v.locker !== "string" || typeof v.address !== "string")
      throw new Error(`unexpected rbd lock list entry: ${JSON.stringify(value).slice(0, 200)}`);
    return { id, locker: v.locker, address: v.address };
  });
}

/** The addresses of the clients watching an image, from `rbd status --format json`. */
export function parseRbdWatchers(stdout: string): string[] {
  const parsed = JSON.parse(stdout.trim() === "" ? "{}" : stdout) as {
    watchers?: { address?: unknown }[];
  };
  return (parsed.watchers ?? []).map((w) => {
    if (typeof w.address !== "string")
      throw new Error(`unexpected rbd status watcher: ${JSON.stringify(w).slice(0, 200)}`);
    return w.address;
  });
}

/** Creates RBD fencing over the `rbd` and `ceph` command lines. */
export function createRbdFencing(options: RbdFencingOptions = {}): RbdFencing {
  const runner = options.runner ?? createLocalRunner();
  const run = async (file: string, args: string[], signal: AbortSignal) => {
    const spec: CommandSpec = {
      file,
      args: [...(options.globalArgs ?? []), ...args],
      timeoutMs: options.timeoutMs ?? 60_000,
      signal,
      env: { LC_ALL: "C" },
    };
    return { spec, out: await runCommand(runner, spec) };
  };
  const rbd = options.rbd ?? "rbd";
  const ceph = options.ceph ?? "ceph";
  return {
    async takeOver(image, node, generation, signal) {
      const name = backendName(image);
      const listed = await run(rbd, ["lock", "list", "--format", "json", name], signal);
      if (listed.out.code !== 0) throw commandFailed(listed.spec, listed.out);
      const lockers = parseRbdLockers(listed.out.stdout);
      for (const l of lockers) {
        const held = parseRbdLockId(l.id);
        if (held !== undefined && held.node === node && held.generation === generation)
          return { blocklisted: [] };
        if (held !== undefined && held.generation >= generation)
          throw new RpcError("STALE_GENERATION", {
            cause: new Error(`${name}: locked as ${l.id}; asked for generation ${generation}`),
          });
      }
      // First every client with the image open (the fenced node's qemu watches its header), so
      // a qemu still running on a cut-off node can no longer write once the lock changes hands.
      const status = await run(rbd, ["status", "--format", "json", name], signal);
      if (status.out.code !== 0) throw commandFailed(status.spec, status.out);
      const blocklisted: string[] = [];
      for (const address of parseRbdWatchers(status.out.stdout)) {
        const b = await run(ceph, ["osd", "blocklist", "add", address], signal);
        if (b.out.code !== 0) throw commandFailed(b.spec, b.out);
        blocklisted.push(address);
      }
      for (const l of lockers) {
        const r = await run(rbd, ["lock", "remove", name, l.id, l.locker], signal);
        if (r.out.code !== 0) throw commandFailed(r.spec, r.out);
      }
      const added = await run(rbd, ["lock", "add", name, rbdLockId(generation, node)], signal);
      if (added.out.code === EBUSY || added.out.code === EEXIST)
        throw new RpcError("STALE_GENERATION", {
          cause: new Error(`${name}: another node locked it meanwhile`),
        });
      if (added.out.code !== 0) throw commandFailed(added.spec, added.out);
      return { blocklisted };
    },
  };
}
