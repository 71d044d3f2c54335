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
