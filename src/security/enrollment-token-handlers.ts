// Enrollment tokens: made by an operator for a node name, spent once by the
// node (CreateEnrollmentToken and Enroll), which gets its first certificate
// and the node role.
import { randomBytes, timingSafeEqual } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { principalOf, RpcError, type ServiceImpl } from "../core/index.js";
import { EnrollmentTokenRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import type { EnrollmentService } from "../gen/debvisor/v1/pki_pb.js";
import { acceptCsr, CsrError } from "../pki/index.js";
import { encodeMessage, getMessage } from "../store/index.js";
import { assertCanActAs, decide } from "./access-evaluator.js";
import { sourceOf } from "./authentication-stage.js";
import { caFingerprint, ts } from "./certificate-info.js";
import type { EnrollmentShared } from "./enrollment-service.js";
import { ENROLLING, sha256, TOKEN_PATTERN, TOKEN_RECORDS } from "./enrollment-token.js";
import { clusterNode } from "./node-named.js";
import { type BucketLimit, createRateLimiter } from "./rate-limiter.js";
import { sourceGroupOf } from "./source-group.js";

type Handlers = Pick<ServiceImpl<typeof EnrollmentService>, "createEnrollmentToken" | "enroll">;

/** Enroll calls per address by default: bucket of 20, refilled at one every 6 s. */
const ENROLL_LIMIT: BucketLimit = { ratePerSecond: 1 / 6, burst: 20 };

/** CreateEnrollmentToken and Enroll, with the per-address Enroll rate limit they own. */
export function createEnrollmentTokenHandlers(shared: EnrollmentShared): Handlers {
  const { deps, issuer } = shared;
  const { store, clock } = deps;
  const limiter = createRateLimiter(clock);

  return {
    async createEnrollmentToken(req, ctx) {
      const ca = issuer.requireCa();
      // The certificate will carry the node role and whatever bindings that name already has.
      assertCanActAs(deps.policy(), principalOf(ctx), req.nodeName, ["node"], undefined);
      // A token for a node that exists (registered, or enrolled: node role cluster-wide) hands
      // its identity to whoever enrols: a cluster admin's to create, as such a certificate is.
      const admin = decide(deps.policy(), principalOf(ctx), "pki:*").allowed;
      if (!admin && (await clusterNode(deps, req.nodeName, ctx.signal)))
        throw new RpcError("PERMISSION_DENIED", {
          cause: new Error(`${req.nodeName} is a node: a cluster admin's to enrol again`),
        });
      const id = randomBytes(8).toString("hex");
      const secret = randomBytes(32).toString("base64url");
      const now = clock.now();
      const ttl = req.ttlSeconds === 0n ? 3_600_000 : Number(req.ttlSeconds) * 1000;
      const record = create(EnrollmentTokenRecordSchema, {
        id,
        nodeName: req.nodeName,
        secretSha256: sha256(secret),
        createdAtMs: BigInt(now),
        expiresAtMs: BigInt(now + ttl),
        createdBy: principalOf(ctx).id,
        forExistingNode: admin,
      });
      await store.put(TOKEN_RECORDS + id, encodeMessage(EnrollmentTokenRecordSchema, record), {
        signal: ctx.signal,
      });
      return {
        token: `dvt_${id}_${secret}`,
        nodeName: req.nodeName,
        expires: ts(record.expiresAtMs),
        caFingerprint: caFingerprint(ca.certPem),
      };
    },
    async enroll(req, ctx) {
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
      if (tok.usedAtMs !== 0n) refuse("enrollment token already used", false);
      if (BigInt(clock.now()) >= tok.expiresAtMs) refuse("enrollment token expired", false);
      // Before the checks of the name: an enrollment of it since fails the spend below.
      const claimKey = ENROLLING + tok.nodeName.toLowerCase();
      const claim = await store.get(claimKey, { signal: ctx.signal });
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
      try {
        await acceptCsr(req.csrPem);
      } catch (err) {
        if (err instanceof CsrError)
          throw new RpcError("INVALID_ARGUMENT", { message: `csr_pem: ${err.message}` });
        throw err;
      }
      // Spend the token atomically: of any number of concurrent uses, one wins.
      const spent = await store.txn(
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
          ],
        },
        { signal: ctx.signal },
      );
      if (!spent.succeeded) {
        const now = await getMessage(store, EnrollmentTokenRecordSchema, TOKEN_RECORDS + id, {
          signal: ctx.signal,
        });
        if (now === undefined || now.message.usedAtMs !== 0n)
          refuse("enrollment token already used", false);
        ctx.log.warn({ node: tok.nodeName }, "enrollment lost to another of the same name");
        throw new RpcError("CONFLICT", {
          message: "another enrollment of this name at the same moment; retry",
        });
      }
      ctx.notes.principal = { id: tok.nodeName, method: "none", roles: [] };
      const issued = await issuer.issue(tok.nodeName, req.csrPem, tok.createdBy, ctx.signal);
      // The name's cluster-wide binding gets the node role, added to what it had: a binding
      // in some tenant (one a tenant admin set before the node existed) never stands in for it.
      const bound = deps.bindings
        .all()
        .find((b) => b.principal === tok.nodeName && b.tenant === "");
      if (bound === undefined || !bound.roles.includes("node")) {
        await deps.bindings.set(
          { principal: tok.nodeName, roles: [...(bound?.roles ?? []), "node"] },
          `enrollment:${id}`,
          ctx.signal,
        );
      }
      return issued;
    },
  };
}
