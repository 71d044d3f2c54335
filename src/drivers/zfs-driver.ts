import { create } from "@bufbuild/protobuf";
import { abortError, invalid, RpcError } from "../core/index.js";
import {
  type DatasetRef,
  type SnapshotInfo,
  SnapshotInfoSchema,
  StorageBackend,
} from "../gen/debvisor/v1/storage_pb.js";
import {
  type CommandExit,
  type CommandRunner,
  type CommandSpec,
  collect,
  commandFailed,
  createLocalRunner,
  runCommand,
} from "./storage-command.js";
import type {
  SendOptions,
  SnapshotTarget,
  StreamReplicationDriver,
  ZfsReplicationDriver,
} from "./storage-driver.js";
import { backendName, snapshotLabels, snapshotSpec } from "./storage-names.js";
import { createThrottle } from "./throttle-stream.js";

/** Options of {@link createZfsDriver}. */
export interface ZfsDriverOptions {
  /**
   * Where the commands for a node's copy run. Default: this host for
   * `localNode` (and for calls naming no node); any other node is
   * STORAGE_UNSUPPORTED, never this host's copy of the same name.
   */
  readonly runnerFor?: (nodeId: string | undefined) => CommandRunner;
  /** The node whose datasets this host holds (for the default `runnerFor`). */
  readonly localNode?: string;
  /** The zfs program (default `zfs` from PATH). */
  readonly command?: string;
  /** Limit of every command but a send (default 60 s). */
  readonly timeoutMs?: number;
  /** Limit of one send/receive (default 24 h). */
  readonly sendTimeoutMs?: number;
}

/** When one side of a send fails, the other gets this long to end by itself. */
const PEER_GRACE_MS = 5000;
/** Progress reports of a send are at least this far apart. */
const PROGRESS_EVERY_MS = 250;
/** The columns `zfs list` prints, in order. */
const COLUMNS = "name,creation,used,userrefs";

/** Known `zfs` error messages and what they mean to a client (with what to say, when the reason's own words do not). */
const ZFS_ERRORS: readonly [RegExp, ConstructorParameters<typeof RpcError>[0], string?][] = [
  // A zfs before OpenZFS 2.0: no `receive -h`, which keeps a stream's holds off this node.
  [
    /invalid option 'h'/,
    "STORAGE_UNSUPPORTED",
    "this node's zfs has no `zfs receive -h`: replication needs OpenZFS 2.0 or later on every node",
  ],
  [/dataset does not exist/, "DATASET_NOT_FOUND"],
  [/could not find any snapshots to destroy/, "SNAPSHOT_NOT_FOUND"],
  [/dataset already exists/, "SNAPSHOT_EXISTS"],
  [/snapshot has dependent clones/, "SNAPSHOT_HAS_CLONES"],
  [/dataset is busy|pool or dataset is busy/, "SNAPSHOT_HELD"],
  [
    /does not match incremental source|destination '[^']*' exists|has been modified\s+since most recent snapshot|destination has snapshots/,
    "REPLICATION_DIVERGED",
  ],
];

/**
 * The ZFS backend over the `zfs` command line: parsable output (`-H -p`),
 * argument arrays, names checked before they reach a command, a timeout on
 * every command. A send pipes `zfs send -P -v` on the source node into
 * `zfs receive -u` on the target, through a byte counter and an optional
 * bandwidth limit.
 */
export function createZfsDriver(
  options: ZfsDriverOptions = {},
): ZfsReplicationDriver & StreamReplicationDriver {
  const local = createLocalRunner();
  const runnerFor =
    options.runnerFor ??
    ((nodeId: string | undefined) => {
      if (nodeId === undefined || nodeId === options.localNode) return local;
      // A replica on this host has the same name as the original: running here would act on the wrong copy.
      throw new RpcError("STORAGE_UNSUPPORTED", {
        message: "zfs commands on other nodes need their node agent, which this version lacks",
      });
    });
  const file = options.command ?? "zfs";
  const timeoutMs = options.timeoutMs ?? 60_000;
  const sendTimeoutMs = options.sendTimeoutMs ?? 86_400_000;
  const spec = (args: string[], signal: AbortSignal, limit = timeoutMs): CommandSpec => ({
    file,
    args,
    timeoutMs: limit,
    signal,
    env: { LC_ALL: "C" },
  });
  const run = async (nodeId: string | undefined, args: string[], signal: AbortSignal) => {
    const s = spec(args, signal);
    const out = await runCommand(runnerFor(nodeId), s);
    if (out.code !== 0) throw zfsError(s, out);
    return out.stdout;
  };

  /**
   * A full receive creates the dataset as whatever the stream says, and the
   * stream is another node's: a filesystem's carries the properties its
   * sender chose (mountpoint=/root/.ssh, canmount, sharenfs), applied at
   * this node's next `zfs mount -a`. Only a volume (a VM disk) is kept; any
   * other is destroyed before anything mounts it (it was received with -u,
   * and -h so that no hold the stream carries keeps a snapshot of it; all of
   * it is this receive's: a full receive into an existing dataset fails).
   */
  const keepOnlyVolume = async (nodeId: string | undefined, dataset: string) => {
    // Not the call's signal: a cancel arriving as the receive ends must not leave what it made.
    const signal = AbortSignal.timeout(timeoutMs);
    const type = await run(nodeId, ["get", "-H", "-o", "value", "type", dataset], signal).then(
      (out) => out.trim(),
      () => undefined,
    );
    if (type === "volume") return;
    // -R: a package stream's clones go too (all of it is this receive's; no hold was taken).
    const destroyed = await run(nodeId, ["destroy", "-R", dataset], signal).then(
      () => true,
      () => false,
    );
    // Not known to be a volume is not kept either: the next run sends it again.
    if (type === undefined)
      throw new RpcError("STORAGE_UNAVAILABLE", {
        message: `could not read what the stream made of ${dataset}: ${destroyed ? "destroyed to be safe; the next run sends it again" : "not destroyed (received unmounted); destroy it"}`,
      });
    throw new RpcError("REPLICATION_STREAM_REFUSED", {
      message: `the stream received into ${dataset} made a ${type}, not a volume: ${destroyed ? "destroyed" : "not destroyed (received unmounted); destroy it"}`,
    });
  };

  async function list(
    dataset: DatasetRef,
    name: string,
    nodeId: string | undefined,
    signal: AbortSignal,
  ): Promise<SnapshotInfo[] | undefined> {
    const args = ["list", "-H", "-p", "-t", "snapshot", "-o", COLUMNS];
    const s = spec(
      name.includes("@") ? [...args, name] : [...args, "-s", "creation", "-d", "1", name],
      signal,
    );
    const out = await runCommand(runnerFor(nodeId), s);
    if (out.code !== 0) {
      const err = zfsError(s, out);
      if (err.reason === "DATASET_NOT_FOUND") return undefined;
      throw err;
    }
    return parseSnapshotList(out.stdout, dataset, s);
  }

  return {
    async listSnapshots(dataset, signal, nodeId) {
      return list(dataset, backendName(dataset), nodeId, signal);
    },
    async createSnapshot(target: SnapshotTarget, signal) {
      const full = snapshotSpec(target.dataset, target.name);
      await run(target.nodeId, ["snapshot", full], signal);
      const made = (await list(target.dataset, full, target.nodeId, signal))?.[0];
      if (made === undefined) throw new RpcError("SNAPSHOT_NOT_FOUND");
      return made;
    },
    async deleteSnapshot(target, signal) {
      await run(target.nodeId, ["destroy", snapshotSpec(target.dataset, target.name)], signal);
    },
    sendSnapshot: (send) =>
      sendSnapshot(send, runnerFor, (args, s) => spec(args, s, sendTimeoutMs), keepOnlyVolume),
    async openSendStream(send) {
      const snapshot = snapshotSpec(send.dataset, send.snapshot);
      const base =
        send.base === undefined ? [] : ["-i", snapshotSpec(send.dataset, send.base, "base")];
      const s = spec(["send", "-P", "-v", ...base, snapshot], send.signal, sendTimeoutMs);
      const sender = runnerFor(send.nodeId).start(s);
      sender.stdin.end();
      const stderr = collect(sender.stderr, 1024 * 1024);
      const done = sender.exit.then(async (exit) => {
        if (exit.code !== 0) throw zfsError(s, { ...exit, stderr: await stderr });
      });
      done.catch(() => {});
      return { stream: sender.stdout, done };
    },
    async receiveStream(receive) {
      const dataset = backendName(receive.dataset);
      const s = spec(
        ["receive", "-u", "-h", ...(receive.base === undefined ? [] : ["-F"]), dataset],
        receive.signal,
        sendTimeoutMs,
      );
      const receiver = runnerFor(receive.nodeId).start(s);
      const stderr = collect(receiver.stderr, 1024 * 1024);
      let bytes = 0;
      // A broken incoming stream kills the receiver: zfs discards a partial receive.
      const broken = new AbortController();
      receive.stream.on("data", (chunk: Buffer) => {
        bytes += chunk.length;
      });
      receive.stream.once("error", () => {
        broken.abort();
        receiver.stdin.destroy();
      });
      receive.stream.pipe(receiver.stdin);
      const exit = await receiver.exit;
      if (exit.code !== 0 || broken.signal.aborted) {
        if (receive.signal.aborted) throw new RpcError("CANCELLED");
        if (broken.signal.aborted && exit.code === 0)
          throw new RpcError("STORAGE_UNAVAILABLE", { message: "send stream interrupted" });
        throw zfsError(s, { ...exit, stderr: await stderr });
      }
      if (receive.base === undefined) await keepOnlyVolume(receive.nodeId, dataset);
      return { bytes };
    },
  };
}

/** Maps a failed `zfs` command to a catalogue reason by its message, else STORAGE_UNAVAILABLE. */
function zfsError(spec: CommandSpec, out: CommandExit & { stderr: string }): RpcError {
  if (!out.aborted && !out.timedOut && out.spawnError === undefined) {
    for (const [pattern, reason, message] of ZFS_ERRORS) {
      if (pattern.test(out.stderr))
        return new RpcError(reason, { message, cause: commandFailed(spec, out).cause });
    }
  }
  return commandFailed(spec, out);
}

/** Parses `zfs list -H -p -o name,creation,used,userrefs` lines of one dataset's snapshots. */
export function parseSnapshotList(
  stdout: string,
  dataset: DatasetRef,
  spec: CommandSpec,
): SnapshotInfo[] {
  const prefix = `${dataset.pool}/${dataset.name}@`;
  const out: SnapshotInfo[] = [];
  for (const line of stdout.split("\n")) {
    if (line === "") continue;
    const [name, creation, used, userrefs, ...rest] = line.split("\t");
    const numbers = [creation, used, userrefs].map((v) =>
      v !== undefined && /^\d+$/.test(v) ? BigInt(v) : undefined,
    );
    if (
      name === undefined ||
      !name.startsWith(prefix) ||
      rest.length > 0 ||
      numbers.includes(undefined)
    )
      throw new RpcError("STORAGE_UNAVAILABLE", {
        cause: new Error(
          `unexpected output of ${spec.file} ${spec.args.join(" ")}: ${line.slice(0, 300)}`,
        ),
      });
    const [created, size, refs] = numbers as bigint[];
    const snapshotName = name.slice(prefix.length);
    out.push(
      create(SnapshotInfoSchema, {
        ref: {
          dataset: { backend: StorageBackend.BACKEND_ZFS, pool: dataset.pool, name: dataset.name },
          snapshotName,
        },
        created: { seconds: created, nanos: 0 },
        sizeBytes: size,
        held: (refs ?? 0n) > 0n,
        userRefs: Number(refs),
        labels: snapshotLabels(snapshotName),
      }),
    );
  }
  return out;
}

/**
 * The estimate `zfs send -P -v` prints before the stream (`size\t<bytes>`),
 * or 0 when it printed none. Its per-second lines (`HH:MM:SS\t<bytes>\t<snapshot>`)
 * are not needed: the bytes are counted as they pass.
 */
export function parseSendEstimate(stderr: string): number {
  const m = /^size\t(\d+)$/m.exec(stderr);
  return m === null ? 0 : Number(m[1]);
}

async function sendSnapshot(
  send: SendOptions,
  runnerFor: (nodeId: string | undefined) => CommandRunner,
  spec: (args: string[], signal: AbortSignal) => CommandSpec,
  keepOnlyVolume: (nodeId: string, dataset: string) => Promise<void>,
): Promise<{ bytes: number }> {
  const dataset = backendName(send.dataset);
  const snapshot = snapshotSpec(send.dataset, send.snapshot);
  if (send.fromNode === send.toNode)
    throw invalid("target: a send needs another node than its source");
  const base = send.base === undefined ? [] : ["-i", snapshotSpec(send.dataset, send.base, "base")];
  // Either side failing stops the other: a dead receiver must not leave a sender blocked.
  const stop = new AbortController();
  const signal = AbortSignal.any([send.signal, stop.signal]);
  const sendSpec = spec(["send", "-P", "-v", ...base, snapshot], signal);
  const recvSpec = spec(
    ["receive", "-u", "-h", ...(send.base === undefined ? [] : ["-F"]), dataset],
    signal,
  );
  const sender = runnerFor(send.fromNode).start(sendSpec);
  const receiver = runnerFor(send.toNode).start(recvSpec);
  sender.stdin.end();
  let expected = 0;
  let reported = Number.NEGATIVE_INFINITY;
  let bytes = 0;
  const senderErr = collect(sender.stderr, 1024 * 1024).then((text) => {
    expected = parseSendEstimate(text);
    return text;
  });
  sender.stderr.on("data", (chunk: Buffer) => {
    if (expected === 0) expected = parseSendEstimate(chunk.toString("utf8"));
  });
  const throttle = createThrottle({
    bytesPerSecond: send.bandwidthLimit,
    onBytes: (total) => {
      bytes = total;
      const t = performance.now();
      if (t - reported >= PROGRESS_EVERY_MS) {
        reported = t;
        send.onProgress?.(total, expected);
      }
    },
  });
  sender.stdout.pipe(throttle).pipe(receiver.stdin);
  const receiverErr = collect(receiver.stderr, 1024 * 1024);
  // A side that fails normally ends the other (a broken pipe, an early end of stream);
  // one that does not within a grace period is killed.
  let killTimer: NodeJS.Timeout | undefined;
  const onExit = (e: CommandExit) => {
    if (e.code !== 0 && killTimer === undefined)
      killTimer = setTimeout(() => stop.abort(), PEER_GRACE_MS);
    return e;
  };
  const [sendExit, recvExit] = await Promise.all([
    sender.exit.then(onExit),
    receiver.exit.then(onExit),
  ]);
  clearTimeout(killTimer);
  const [sendText, recvText] = await Promise.all([senderErr, receiverErr]);
  // Both sides exited 0: the target has the snapshot, however late an abort came.
  if (send.signal.aborted && (sendExit.code !== 0 || recvExit.code !== 0))
    throw abortError(send.signal);
  // A recognised complaint wins, the receiver's first: it explains more than a broken pipe.
  const failures = [
    recvExit.code !== 0 ? zfsError(recvSpec, { ...recvExit, stderr: recvText }) : undefined,
    sendExit.code !== 0 ? zfsError(sendSpec, { ...sendExit, stderr: sendText }) : undefined,
  ].filter((e): e is RpcError => e !== undefined);
  const failure =
    failures.find((e) => e.reason !== "STORAGE_UNAVAILABLE" && e.reason !== "CANCELLED") ??
    failures.find((e) => e.reason !== "CANCELLED") ??
    failures[0];
  if (failure !== undefined) throw failure;
  if (send.base === undefined) await keepOnlyVolume(send.toNode, dataset);
  send.onProgress?.(bytes, expected);
  return { bytes };
}
