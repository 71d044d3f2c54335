// RevokeCertificate: a certificate revoked with its whole renewal chain, so
// no copy of an ancestor or a successor outlives the revocation; and
// ListRevokedServerCertificates: the revoked server certificates clients
// refuse (hvctl; agents hear the same list on their streams).
import { RpcError, type ServiceImpl } from "../core/index.js";
import type { EnrollmentService } from "../gen/debvisor/v1/pki_pb.js";
import { certificateInfo, displaySerial, ts } from "./certificate-info.js";
import type { EnrollmentShared } from "./enrollment-service.js";
import { normalizeSerial } from "./revocations.js";

type Handlers = Pick<
  ServiceImpl<typeof EnrollmentService>,
  "revokeCertificate" | "listRevokedServerCertificates"
>;

/** Passes over a revoked certificate's successors before renewals racing it count as a CONFLICT. */
const MAX_REVOCATION_PASSES = 16;

/**
 * RevokeCertificate: the serial, its ancestors and every successor, in the
 * revocation list and the ledger. ListRevokedServerCertificates: the list
 * agents are told, REVOKED_SERVERS_NOT_READY until it was read once (an
 * empty list then would replace a client's own).
 */
export function createRevocationHandlers(shared: EnrollmentShared): Handlers {
  const { deps, ledger } = shared;
  const { clock } = deps;

  return {
    async revokeCertificate(req, ctx) {
      const serial = normalizeSerial(req.serial.replace(/:/g, ""));
      await deps.revocations.revoke(serial, req.reason || "revoked", ctx.signal);
      const mark = async (other: string, why: string) => {
        await deps.revocations.revoke(other, why, ctx.signal);
        await ledger.markRevoked(other, why, ctx.signal);
      };
      // The certificates it was renewed from: superseded, but each authenticates until its own
      // end, so a copy of one would outlive the revocation of the chain's newest.
      const done = new Set([serial]);
      for (const prev of (await ledger.lineage(serial, ctx.signal)).ancestors) {
        done.add(prev);
        await mark(prev, `predecessor of revoked ${serial}`);
      }
      // Every certificate renewed from it, however issued (RPC, dev mode, the server's own):
      // revoked too, or a stolen one outlives its revocation. A renewal is refused once its
      // certificate is revoked (it compares the revocation key), but one that got in before
      // (between a pass's look and its revocation) is found by the next pass.
      for (let pass = 0, found = true; found; pass++) {
        if (pass === MAX_REVOCATION_PASSES) throw new RpcError("CONFLICT");
        found = false;
        for (const next of (await ledger.lineage(serial, ctx.signal)).descendants) {
          if (done.has(next)) continue;
          done.add(next);
          found = true;
          await mark(next, `successor of revoked ${serial}`);
        }
      }
      const r = await ledger.markRevoked(serial, req.reason, ctx.signal);
      return r === undefined
        ? {
            serial: displaySerial(serial),
            revoked: ts(clock.now()),
            revocationReason: req.reason,
          }
        : certificateInfo(r);
    },
    async listRevokedServerCertificates() {
      const serials = deps.revokedServers.current();
      if (serials === undefined) throw new RpcError("REVOKED_SERVERS_NOT_READY");
      return { serials: [...serials] };
    },
  };
}
