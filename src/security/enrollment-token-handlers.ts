// Enrollment tokens: made by an operator for a node name, spent once by the
// node (CreateEnrollmentToken and Enroll), which gets its first certificate
// and the node role.
import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { principalOf, RpcError, type ServiceImpl } from "../core/index.js";
import { EnrollmentTokenRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import type { EnrollmentService } from "../gen/debvisor/v1/pki_pb.js";
import { encodeMessage } from "../store/index.js";
import { assertCanActAs, decide } from "./access-evaluator.js";
import { caFingerprint, ts } from "./certificate-info.js";
import { createEnrollHandler } from "./enroll-handler.js";
import type { EnrollmentShared } from "./enrollment-service.js";
import { sha256, TOKEN_RECORDS } from "./enrollment-token.js";
import { clusterNode } from "./node-named.js";

type Handlers = Pick<ServiceImpl<typeof EnrollmentService>, "createEnrollmentToken" | "enroll">;

/** CreateEnrollmentToken here, and Enroll (enroll-handler.ts). */
export function createEnrollmentTokenHandlers(shared: EnrollmentShared): Handlers {
  const { deps, issuer } = shared;
  const { store, clock } = deps;

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
    enroll: createEnrollHandler(shared),
  };
}
