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

/** The newest rotated file of `path` (the last in name order) and its stamp's time; undefined when none. */
export function newestRotatedFile(path: string): { path: string; ms: number } | undefined {
  const prefix = `${basename(path)}.`;
  let newest: { name: string; stamp: RegExpExecArray } | undefined;
  let names: string[];
  try {
    names = readdirSync(dirname(path));
  } catch {
    return undefined;
  }
  for (const name of names) {
    const stamp = name.startsWith(prefix) ? STAMP.exec(name.slice(prefix.length)) : null;
    if (stamp !== null && (newest === undefined || name > newest.name)) newest = { name, stamp };
  }
  if (newest === undefined) return undefined;
  const [, hour, min, sec, milli] = newest.stamp;
  return {
    path: join(dirname(path), newest.name),
    ms: Date.parse(`${hour}:${min}:${sec}.${milli}Z`),
  };
}
