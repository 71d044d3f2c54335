// Keeps the simulated storage in a file: every method is wrapped so that the
// state is written after a call that changed it.

import type { SimulatedStorage } from "./simulated-storage.js";
import {
  type StorageState,
  storageStateText,
  writeStorageState,
} from "./simulated-storage-state.js";

/**
 * Wraps every method so the state is written after a call that changed it;
 * `fresh` (no file read at start) writes it at once.
 */
export function persistedStorage(
  driver: SimulatedStorage,
  file: string,
  state: StorageState,
  fresh: boolean,
): SimulatedStorage {
  let last = storageStateText(state);
  // Only a new state is written at once: a reader (`debvisor-agent status`) never rewrites the file.
  if (fresh) writeStorageState(file, last);
  const save = () => {
    const text = storageStateText(state);
    if (text === last) return;
    writeStorageState(file, text);
    last = text;
  };
  const wrapped: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(driver)) {
    if (typeof fn !== "function") {
      wrapped[name] = fn;
      continue;
    }
    wrapped[name] = (...args: unknown[]) => {
      const out = (fn as (...a: unknown[]) => unknown).apply(driver, args);
      if (out instanceof Promise)
        return out.then(
          (v) => {
            save();
            return v;
          },
          (err: unknown) => {
            save();
            throw err;
          },
        );
      save();
      return out;
    };
  }
  return wrapped as unknown as SimulatedStorage;
}
