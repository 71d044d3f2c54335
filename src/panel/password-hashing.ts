import { webcrypto } from "node:crypto";
import { argon2id, argon2Verify } from "hash-wasm";

/**
 * argon2id parameters: OWASP's first recommendation (19 MiB, 2 passes, one
 * lane). Stored in the PHC string, so raising them later still verifies old
 * hashes.
 */
const PARAMS = { memorySize: 19_456, iterations: 2, parallelism: 1, hashLength: 32 } as const;

/** Passwords longer than this are refused before hashing (argon2 cost is per byte too). */
export const MAX_PASSWORD_LENGTH = 256;

/**
 * Cheaper parameters for secrets the daemon generated itself (96 random bits
 * or more): no guessing attack is helped by the cost, and dev mode makes one
 * at every start. Verification reads the parameters from the PHC string.
 */
const GENERATED = { memorySize: 1024, iterations: 1, parallelism: 1, hashLength: 32 } as const;

/** The argon2id PHC string of `password` with a fresh 16-byte salt; `generated` for random secrets the daemon made. */
export async function hashPassword(password: string, generated = false): Promise<string> {
  const salt = webcrypto.getRandomValues(new Uint8Array(16));
  return argon2id({ ...(generated ? GENERATED : PARAMS), password, salt, outputType: "encoded" });
}

// Verified when the account does not exist, so its absence costs the same time.
let dummy: Promise<string> | undefined;

/**
 * True when `password` matches `hash`. With no hash (unknown account) it
 * still spends the time of a verification and returns false. An empty
 * password matches nothing, at once for every account (argon2Verify throws
 * on it, and did so for an unknown account only: an INTERNAL answer that
 * told the account did not exist).
 */
export async function verifyPassword(password: string, hash: string | undefined): Promise<boolean> {
  if (password.length === 0 || password.length > MAX_PASSWORD_LENGTH) return false;
  if (hash === undefined) {
    dummy ??= hashPassword("not a password of anyone");
    await argon2Verify({ password, hash: await dummy });
    return false;
  }
  try {
    return await argon2Verify({ password, hash });
  } catch {
    return false;
  }
}
