import { join } from "node:path";
import { readFileIfPresent, writeFileDurably } from "./durable-file.js";

/**
 * The placement generation each VM's copy on this node was last started
 * under (a start, reboot or recover carrying one), kept in the agent's
 * directory (`copy-generations.json`). A removal of a stale copy compares
 * with it: only a copy older than the VM's current generation is removed.
 * A copy never started here under a generation counts as 0.
 */
export interface CopyGenerations {
  of(vmId: string): bigint;
  /** Records that the copy here now runs under `generation` (0: nothing recorded). */
  started(vmId: string, generation: bigint): void;
  forget(vmId: string): void;
}

/** Opens (or starts) the record in `dir`; in memory when `dir` is undefined. */
export function openCopyGenerations(dir?: string): CopyGenerations {
  const file = dir === undefined ? undefined : join(dir, "copy-generations.json");
  const text = file === undefined ? undefined : readFileIfPresent(file);
  const gens = new Map<string, bigint>(
    Object.entries(text === undefined ? {} : (JSON.parse(text) as Record<string, string>)).map(
      ([k, v]) => [k, BigInt(v)],
    ),
  );
  const save = () => {
    if (file !== undefined)
      writeFileDurably(
        file,
        JSON.stringify(Object.fromEntries([...gens].map(([k, v]) => [k, String(v)]))),
      );
  };
  return {
    of: (vmId) => gens.get(vmId) ?? 0n,
    started(vmId, generation) {
      if (generation === 0n || gens.get(vmId) === generation) return;
      gens.set(vmId, generation);
      save();
    },
    forget(vmId) {
      if (gens.delete(vmId)) save();
    },
  };
}
