import {
  closeSync,
  fchmodSync,
  fsyncSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { dirname, resolve } from "node:path";
import { lockFileSet } from "./file-set-lock.js";

/** One file of a {@link writeFileSet}. */
export interface SetFile {
  readonly path: string;
  readonly text: string;
  readonly mode: number;
}

/** The marker beside a set's first file: the set is written in full and is being moved in. */
const markerOf = (first: string) => `${first}.set`;
const nextOf = (path: string) => `${path}.next`;

/**
 * Writes `text` to a new file `path` and flushes it to disk before
 * returning. A leftover is removed first, and the file is created
 * exclusively: a link planted at `path` (in a directory others may write) is
 * never followed, so a key is never written through it.
 */
function writeDurably(path: string, text: string, mode: number): void {
  rmSync(path, { force: true });
  const fd = openSync(path, "wx", mode);
  try {
    fchmodSync(fd, mode);
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Flushes the directories holding `paths` (their renames survive a power loss). */
function syncDirs(paths: readonly string[]): void {
  for (const dir of new Set(paths.map((p) => dirname(p)))) {
    const fd = openSync(dir, "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
}

/**
 * Replaces files that belong together (a key and its certificate) so that
 * a crash or power loss never leaves them of two generations: each is
 * written in full beside its place (`.next`) and flushed, then a marker
 * beside the first names them all (the commit point), then each is moved
 * in. A crash before the marker leaves the old set; after it,
 * {@link finishFileSet} on the first file's path completes the move, so the
 * new set is whole. Every reader of such a set calls that first. One
 * writer of a set at a time ({@link lockFileSet}): two at once (two daemons
 * renewing the files they share) each wrote the same `.next` copies and
 * moved them in one by one, so a key could end beside the other's
 * certificate. Waiting for another writer's lock does not block the event
 * loop (the daemon renews while it serves); the write itself, once the
 * lock is held, is synchronous, so no two writes of one process interleave.
 */
export async function writeFileSet(files: readonly SetFile[]): Promise<void> {
  const first = files[0]?.path;
  if (first === undefined) return;
  const unlock = await lockFileSet(first);
  try {
    writeLockedFileSet(files);
  } finally {
    unlock();
  }
}

/**
 * {@link writeFileSet} for a writer that already holds the set's lock
 * ({@link lockFileSet} on the first file's path): one that reads the file
 * and writes it again changed, so no other writer's change lands between
 * its read and its write (hvctl's lists of revoked server certificates,
 * one per cluster in one file).
 */
export function writeLockedFileSet(files: readonly SetFile[]): void {
  const first = files[0]?.path;
  if (first === undefined) return;
  finishFileSet(first);
  for (const f of files) writeDurably(nextOf(f.path), f.text, f.mode);
  // Every new copy's name is on disk before the marker that names it (a set may span folders).
  syncDirs(files.map((f) => f.path));
  const marker = markerOf(first);
  // Absolute: whoever completes the set may run elsewhere (hvctl cert issue --out ./tls, then
  // the daemon reading tls/ from its own working directory).
  writeDurably(nextOf(marker), JSON.stringify(files.map((f) => resolve(f.path))), 0o600);
  renameSync(nextOf(marker), marker);
  syncDirs([marker]);
  finishFileSet(first);
}

/**
 * Completes a {@link writeFileSet} of which `first` is the first file, if
 * one was interrupted after its commit point; nothing otherwise.
 */
export function finishFileSet(first: string): void {
  const marker = markerOf(first);
  // Another process (the writer, or a reader like this one) may complete the same set at the
  // same time: what it moved or removed first is gone here, and that is no failure.
  const text = gone(() => readFileSync(marker, "utf8"));
  if (text === undefined) return;
  const paths = JSON.parse(text) as string[];
  for (const p of paths) gone(() => renameSync(nextOf(p), p));
  syncDirs(paths);
  gone(() => unlinkSync(marker));
  syncDirs([marker]);
}

/** What `f` answers; undefined if a file it touches is not there (ENOENT). */
function gone<T>(f: () => T): T | undefined {
  try {
    return f();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}
