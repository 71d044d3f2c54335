// Certificates beyond enrollment: an operator issuing one (IssueCertificate),
// a holder renewing its own over mTLS (RenewCertificate), and the issued
// list (ListCertificates).
import { isIP } from "node:net";
import { principalOf, RpcError, type ServiceImpl } from "../core/index.js";
import type { EnrollmentService } from "../gen/debvisor/v1/pki_pb.js";
import { assertCanActAs, decide } from "./access-evaluator.js";
import { certificateInfo } from "./certificate-info.js";
import type { EnrollmentShared } from "./enrollment-service.js";
import { clusterNode, nodeNamed } from "./node-named.js";

type Handlers = Pick<
  ServiceImpl<typeof EnrollmentService>,
  "renewCertificate" | "issueCertificate" | "listCertificates"
>;

const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;

/** RenewCertificate, IssueCertificate and ListCertificates. */
export function createCertificateHandlers(shared: EnrollmentShared): Handlers {
  const { deps, days, ledger, issuer } = shared;
  const { clock } = deps;
  const isNodeName = (name: string, signal: AbortSignal) => nodeNamed(deps, name, signal);

  return {
    async renewCertificate(req, ctx) {
      const p = principalOf(ctx);
      const cert = ctx.peer.certificate;
      if (p.method !== "mtls" || cert === undefined) throw new RpcError("RENEW_NEEDS_MTLS");
      const recorded = await ledger.get(cert.serialNumber, ctx.signal);
      const wait =
        recorded === undefined
          ? 0
          : Number(recorded.issuedAtMs) + (deps.minRenewalAgeMs ?? HOUR_MS) - clock.now();
      if (wait > 0)
        throw new RpcError("CERT_TOO_NEW_TO_RENEW", {
          message: `this certificate is too new to renew; retry after ${Math.ceil(wait / 1000)} s`,
          retryAfterMs: wait,
        });
      // A node's certificate renews for a full term, as nodes keep themselves enrolled. Any
      // other (one an operator issued for a day) keeps its predecessor's end: renewing changes
      // its key, never how long it lasts. The end is the certificate's own: one the ledger never
      // recorded (issued with the CA key by hand) is no reason for a full term.
      const end = (await clusterNode(deps, p.id, ctx.signal))
        ? undefined
        : (cert.notAfterMs ?? Number(recorded?.notAfterMs));
      const left = end === undefined || !Number.isFinite(end) ? days : (end - clock.now()) / DAY_MS;
      // Once per certificate: the successor renews next, so a stolen copy cannot fork the chain.
      return issuer.issue(
        p.id,
        req.csrPem,
        p.id,
        ctx.signal,
        { usage: "client", sans: [], days: Math.min(days, left) },
        {
          serial: cert.serialNumber,
          subject: cert.commonName,
          issuer: cert.issuer,
        },
      );
    },
    async issueCertificate(req, ctx) {
      // A certificate named after a bound principal acts as that principal.
      assertCanActAs(deps.policy(), principalOf(ctx), req.commonName, [], undefined);
      // A server certificate can impersonate this cluster's endpoints, and one named after a
      // node (registered, promised a token, or bound to the node role) acts as that node the
      // moment it enrolls: only a cluster admin (cluster-wide, holding pki:*) issues those.
      const usageServer = req.usage === "server";
      if (
        (usageServer || (await isNodeName(req.commonName, ctx.signal))) &&
        !decide(deps.policy(), principalOf(ctx), "pki:*").allowed
      )
        throw new RpcError("PERMISSION_DENIED", {
          cause: new Error(
            usageServer
              ? "server certificates are a cluster admin's to issue"
              : `${req.commonName} is a node name: a cluster admin's to issue`,
          ),
        });
      const bad = req.sans.find(
        (n) =>
          !(
            isIP(n) !== 0 ||
            /^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$/.test(n)
          ),
      );
      if (bad !== undefined)
        throw new RpcError("INVALID_ARGUMENT", {
          message: `sans: ${bad.slice(0, 64)} is not a DNS name or IP address`,
        });
      const usage = req.usage === "server" ? "server" : "client";
      const ttl = req.ttlDays === 0 ? (usage === "server" ? 90 : days) : req.ttlDays;
      return issuer.issue(req.commonName, req.csrPem, principalOf(ctx).id, ctx.signal, {
        usage,
        sans: req.sans,
        days: ttl,
      });
    },
    async listCertificates(req, ctx) {
      const out = [];
      for await (const r of ledger.list(ctx.signal)) {
        if (req.subject === "" || r.subject === req.subject) out.push(certificateInfo(r));
      }
      return { certificates: out };
    },
  };
}
