// The names of rotated audit files: `<path>.<time stamp>` (`-0001`... after
// it on a collision). Stamps never go back (a clock stepped back stamps with
// the newest one's time), so the names sort in the order the files were
// written: the order `hvctl audit verify` takes them in.

import { readdirSync } from "node:fs";
import { basename, dirname, join } from "node:path";

const STAMP = /^(\d{4}-\d\d-\d\dT\d\d)-(\d\d)-(\d\d)-(\d{3})Z(-\d{4})?$/;

/** The time stamp of a rotation at `ms`, as it goes into the rotated file's name. */
export function rotationStamp(ms: number): string {
  return new Date(ms).toISOString().replace(/[:.]/g, "-");
}

/** The rotated files of `path`, oldest first (name order), each with its stamp's time. */
export function rotatedAuditFiles(path: string): { path: string; ms: number }[] {
  const prefix = `${basename(path)}.`;
  let names: string[];
  try {
    names = readdirSync(dirname(path));
  } catch {
    return [];
  }
  const rotated: { name: string; stamp: RegExpExecArray }[] = [];
  for (const name of names) {
    const stamp = name.startsWith(prefix) ? STAMP.exec(name.slice(prefix.length)) : null;
    if (stamp !== null) rotated.push({ name, stamp });
  }
  return rotated
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map(({ name, stamp: [, hour, min, sec, milli] }) => ({
      path: join(dirname(path), name),
      ms: Date.parse(`${hour}:${min}:${sec}.${milli}Z`),
    }));
}

/** The newest rotated file of `path` (the last in name order) and its stamp's time; undefined when none. */
export function newestRotatedFile(path: string): { path: string; ms: number } | undefined {
  return rotatedAuditFiles(path).at(-1);
}
