import { createHmac, randomBytes } from "node:crypto";
import { RpcError } from "../core/index.js";

/**
 * The page tokens of ListAuditRecords: the seq of the last record given and
 * where its line starts (`seq.offset`), so the next page reads on from there
 * instead of from the file's start. The offset is masked with a key of this
 * daemon (XOR with an HMAC of the seq): a plain byte offset would tell a
 * tenant-confined caller the size of the other tenants' records between two
 * of its own (and so which calls they made, the length of their names). A
 * token of another daemon, of this one before a restart, or made up, unmasks
 * to some offset the reader checks and falls back from; a plain seq (tokens
 * of earlier daemons) still works.
 */
export interface AuditPageTokens {
  /** The token after the record `seq` whose line starts at byte `at`. */
  encode(seq: number, at: number): string;
  /** The seq a token names and, when it carries one, the offset to check first; PAGE_TOKEN_INVALID when malformed. */
  decode(token: string): { after: number; at: number | undefined };
}

/** Offsets are masked in 48 bits (256 TiB, far past a rotated file); a larger one is left out. */
const MASK_BITS = 48;
const LIMIT = 2 ** MASK_BITS;

/** Page tokens masked with `key` (default: a random key for this daemon's lifetime). */
export function createAuditPageTokens(key: Buffer = randomBytes(32)): AuditPageTokens {
  const mask = (seq: number) =>
    BigInt(
      createHmac("sha256", key)
        .update(String(seq))
        .digest()
        .readUIntBE(0, MASK_BITS / 8),
    );
  const apply = (seq: number, n: number) => Number(BigInt(n) ^ mask(seq));
  return {
    encode(seq, at) {
      return at < LIMIT ? `${seq}.${apply(seq, at)}` : String(seq);
    },
    decode(token) {
      if (token === "") return { after: 0, at: undefined };
      const m = /^(\d{1,15})(?:\.(\d{1,15}))?$/.exec(token);
      if (m === null) throw new RpcError("PAGE_TOKEN_INVALID");
      const after = Number(m[1]);
      const masked = m[2] === undefined ? undefined : Number(m[2]);
      return {
        after,
        at: masked === undefined || masked >= LIMIT ? undefined : apply(after, masked),
      };
    },
  };
}
