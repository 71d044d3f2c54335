// Enroll: a node spends its enrollment token, with a CSR, for its first
// certificate and the node role. The token record, the name's claim and the
// spend are checked and written here; completion (issue, binding, a retry's
// answer) is enrollment-completion.ts.
import { timingSafeEqual } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { RpcError, type ServiceImpl } from "../core/index.js";
import { EnrollmentTokenRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import type { EnrollmentService } from "../gen/debvisor/v1/pki_pb.js";
import { acceptCsr, CsrError } from "../pki/index.js";
import { encodeMessage, getMessage } from "../store/index.js";
import { sourceOf } from "./authentication-stage.js";
import { createEnrollmentCompletion } from "./enrollment-completion.js";
import type { EnrollmentShared } from "./enrollment-service.js";
import { ENROLLING, sha256, TOKEN_PATTERN, TOKEN_RECORDS } from "./enrollment-token.js";
import { clusterNode } from "./node-named.js";
import { type BucketLimit, createRateLimiter } from "./rate-limiter.js";
import { sourceGroupOf } from "./source-group.js";

/** Enroll calls per address by default: bucket of 20, refilled at one every 6 s. */
const ENROLL_LIMIT: BucketLimit = { ratePerSecond: 1 / 6, burst: 20 };

/** The Enroll handler, with the per-address rate limit it owns. */
export function createEnrollHandler(
  shared: EnrollmentShared,
): ServiceImpl<typeof EnrollmentService>["enroll"] {
  const { deps, issuer } = shared;
  const { store, clock } = deps;
  const limiter = createRateLimiter(clock);
  const completion = createEnrollmentCompletion(shared);

  return async (req, ctx) => {
    issuer.requireCa();
    const source = sourceGroupOf(sourceOf(ctx.peer.address));
    // Only guessing counts toward the lockout: the right secret for a spent
    // or expired token (a retry, a race) is no attack on the secret.
    // Counted per token id, so a flood from a shared address locks out no good token.
    const credential = `enroll:${TOKEN_PATTERN.exec(req.token)?.[1] ?? ""}`;
    const refuse = (why: string, guess = true): never => {
      if (guess) deps.lockout.recordFailure(source, credential);
      ctx.notes.decision = "unauthenticated";
      ctx.notes.reason = why;
      ctx.log.warn({ peer: ctx.peer.address, why }, "enrollment refused");
      throw new RpcError("UNAUTHENTICATED", { cause: new Error(why) });
    };
    const take = limiter.take(source, 1, deps.enrollLimit ?? ENROLL_LIMIT);
    if (!take.allowed)
      throw new RpcError("RATE_LIMITED", {
        message: `rate limit exceeded; retry after ${take.retryAfterMs} ms`,
        retryAfterMs: take.retryAfterMs,
      });
    if (deps.lockout.lockedUntil(credential) !== undefined) refuse("token locked out");
    const m = TOKEN_PATTERN.exec(req.token);
    if (m === null) refuse("malformed enrollment token");
    const [, id, secret] = m as unknown as [string, string, string];
    const found = await getMessage(store, EnrollmentTokenRecordSchema, TOKEN_RECORDS + id, {
      signal: ctx.signal,
    });
    const presented = sha256(secret);
    if (found === undefined) refuse("unknown enrollment token");
    const tok = (found as NonNullable<typeof found>).message;
    if (!timingSafeEqual(presented, Buffer.from(tok.secretSha256)))
      refuse("enrollment token secret mismatch");
    const expired = () => BigInt(clock.now()) >= tok.expiresAtMs;
    // A spent token answers again only the key it was spent for: the node's retry after it
    // gave up on the call that spent it. A copy of the token with another key is refused.
    const again = async () => {
      if (!(await completion.sameKey(id, req.csrPem, ctx.signal)))
        refuse("enrollment token already used", false);
      if (expired()) refuse("enrollment token expired", false);
      const done = await completion.finish(id, tok, req.csrPem);
      // The name enrolled by another token since, before this one's certificate was issued.
      if (done === undefined) refuse("enrollment token already used", false);
      const { enrolled, fresh } = done as NonNullable<typeof done>;
      // Revoked since: the cluster took that certificate back; this token gives no other.
      if (!fresh && deps.revocations.isRevoked(enrolled.serial))
        refuse("enrollment token already used", false);
      ctx.notes.principal = { id: tok.nodeName, method: "none", roles: [] };
      ctx.notes.reason = fresh
        ? `enrollment with token ${id} completed on a retry`
        : `re-delivery of certificate ${enrolled.serial} from token ${id} to the key it was spent for`;
      ctx.log.info({ node: tok.nodeName, serial: enrolled.serial, fresh }, "enrollment retried");
      return enrolled;
    };
    if (tok.usedAtMs !== 0n) return again();
    if (expired()) refuse("enrollment token expired", false);
    // Before the checks of the name: an enrollment of it since fails the spend below.
    const claimKey = ENROLLING + tok.nodeName.toLowerCase();
    const claim = await store.get(claimKey, { signal: ctx.signal });
    // This token's own claim: it was spent since it was read (by the call its node gave up on).
    if (claim !== undefined && new TextDecoder().decode(claim.value) === id) return again();
    // A token anyone but a cluster admin made is for a new node: made before the name became
    // a node (enrolled, registered) meanwhile, it would hand that node's identity over. A name
    // another token was spent on (the claim) is a node's too, or is becoming one: its binding
    // is set only once its certificate is issued, and an enrolment judged in between won too.
    if (
      !tok.forExistingNode &&
      (claim !== undefined || (await clusterNode(deps, tok.nodeName, ctx.signal)))
    )
      refuse(`${tok.nodeName} became a node after this token was made`, false);
    // Check the CSR before spending the token, so a bad CSR does not burn it.
    let spkiDer: Uint8Array;
    try {
      ({ spkiDer } = await acceptCsr(req.csrPem));
    } catch (err) {
      if (err instanceof CsrError)
        throw new RpcError("INVALID_ARGUMENT", { message: `csr_pem: ${err.message}` });
      throw err;
    }
    // Spend the token atomically: of any number of concurrent uses, one wins. From the spend
    // on, the server's own bounded signal: the spend, issue and binding happen whole, whether
    // or not the caller still waits; its retry with this key gets the certificate.
    const won = await store.txn(
      {
        compares: [
          {
            key: TOKEN_RECORDS + id,
            modRevision: (found as NonNullable<typeof found>).modRevision,
          },
          { key: claimKey, modRevision: claim?.modRevision ?? 0 },
        ],
        success: [
          {
            type: "put",
            key: TOKEN_RECORDS + id,
            value: encodeMessage(
              EnrollmentTokenRecordSchema,
              create(EnrollmentTokenRecordSchema, { ...tok, usedAtMs: BigInt(clock.now()) }),
            ),
          },
          { type: "put", key: claimKey, value: new TextEncoder().encode(id) },
          completion.spendOp(id, spkiDer),
        ],
      },
      { signal: completion.signal() },
    );
    if (!won.succeeded) {
      const now = await getMessage(store, EnrollmentTokenRecordSchema, TOKEN_RECORDS + id, {
        signal: ctx.signal,
      });
      if (now === undefined) refuse("enrollment token already used", false);
      if (now?.message.usedAtMs !== 0n) return again();
      ctx.log.warn({ node: tok.nodeName }, "enrollment lost to another of the same name");
      throw new RpcError("CONFLICT", {
        message: "another enrollment of this name at the same moment; retry",
      });
    }
    const done = await completion.finish(id, tok, req.csrPem);
    // Another token's enrolment of the name got in between the spend and the issue.
    if (done === undefined) refuse(`${tok.nodeName} was enrolled by another token`, false);
    ctx.notes.principal = { id: tok.nodeName, method: "none", roles: [] };
    return (done as NonNullable<typeof done>).enrolled;
  };
}
