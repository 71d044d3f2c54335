// An enrollment token's shape, shared by the handlers that make and spend
// tokens and by the check for names that belong to a node.
import { createHash } from "node:crypto";

/** Where enrollment token records live: `pki/tokens/<id>`. */
export const TOKEN_RECORDS = "pki/tokens/";
/**
 * Where enrollments of one name meet: `pki/enrolling/<name>`, read before
 * the checks and written with the token's spending, compared on its
 * revision. Of two enrollments of a new name at once (two tokens a
 * provisioner made for it) one wins; the other is refused, its token not
 * spent, and judged again on its retry, when the name is a node.
 */
export const ENROLLING = "pki/enrolling/";
/** A token as handed out: `dvt_<16 hex id>_<43 base64url secret>`; group 1 is the id, 2 the secret. */
export const TOKEN_PATTERN = /^dvt_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;

/** The SHA-256 digest of a token secret, as its record keeps it. */
export const sha256 = (s: string) => createHash("sha256").update(s).digest();
