import { RpcError } from "../core/index.js";

/**
 * Principal names are namespaced by where they come from, so one source can
 * never name a principal of another. Certificates (their CN) and API keys
 * (the principal they were made for) use plain names, as they always did:
 * both are minted by this cluster under its escalation checks. A JWT's
 * `sub` is chosen by an outside issuer, so it becomes `jwt:<issuer>:<sub>`:
 * a `sub` of "admin" or of a node's name inherits nothing of theirs.
 */
export function jwtPrincipal(issuer: string, subject: string): string {
  return `jwt:${issuer}:${subject}`;
}

/**
 * Refuses (INVALID_ARGUMENT) a principal name that is not 1-256 printable
 * ASCII characters: no spaces, control characters or look-alike letters
 * (a Cyrillic "а" in "аdmin"), so a name shown in an audit record or a
 * listing is the name it looks like.
 */
export function assertPrincipalName(principal: string): void {
  if (!/^[\x21-\x7e]{1,256}$/.test(principal))
    throw new RpcError("INVALID_ARGUMENT", {
      message: "principal: printable ASCII, 1-256 characters",
    });
}
