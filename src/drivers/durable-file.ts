import { closeSync, fsyncSync, openSync, renameSync, writeSync } from "node:fs";

/**
 * Replaces `file` with `text` so that a crash leaves the old or the new
 * content, never a mix: a temporary file beside it (mode 0600), fsync,
 * rename. What the simulated hypervisors and the agent's journal keep.
 */
export function writeFileDurably(file: string, text: string): void {
  const tmp = `${file}.tmp`;
  const fd = openSync(tmp, "w", 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
}
