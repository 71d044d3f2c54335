import { createHash, randomBytes, timingSafeEqual, X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import { create } from "@bufbuild/protobuf";
import {
  type Clock,
  defineService,
  principalOf,
  RpcError,
  type ServiceBinding,
} from "../core/index.js";
import {
  type CertificateRecord,
  CertificateRecordSchema,
  EnrollmentTokenRecordSchema,
} from "../gen/debvisor/store/v1/records_pb.js";
import { EnrollmentService } from "../gen/debvisor/v1/pki_pb.js";
import { acceptCsr, type CertificateAuthority, CsrError } from "../pki/index.js";
import {
  decodeMessage,
  encodeMessage,
  getMessage,
  type KvStore,
  rangeAll,
} from "../store/index.js";
import { type AccessPolicy, assertCanActAs, decide } from "./access-evaluator.js";
import { sourceOf } from "./authentication-stage.js";
import { createCertificateLedger } from "./certificate-ledger.js";
import type { Lockout } from "./lockout.js";
import { type BucketLimit, createRateLimiter } from "./rate-limiter.js";
import { normalizeSerial, type Revocations } from "./revocations.js";
import { sourceGroupOf } from "./source-group.js";
import type { StoredBindings } from "./stored-bindings.js";

/** Dependencies of the EnrollmentService handlers. */
export interface EnrollmentServiceDeps {
  readonly store: KvStore;
  readonly clock: Clock;
  /** The cluster CA; undefined when this server holds no CA key (then issuing answers FAILED_PRECONDITION). */
  readonly ca: CertificateAuthority | undefined;
  readonly revocations: Revocations;
  /** Enrolled nodes are bound to the node role (acting only for themselves). */
  readonly bindings: StoredBindings;
  /** The policy in force, for the no-escalation checks on tokens and issued names. */
  readonly policy: () => AccessPolicy;
  /** Bad tokens count toward this lockout, per address. */
  readonly lockout: Lockout;
  /** Client certificate lifetime (default 30 days). */
  readonly certificateDays?: number;
  /**
   * How long after it was issued a certificate may renew (default an hour).
   * Each renewal is a new certificate that renews in turn: without it, any
   * certificate's holder could add records to the ledger as fast as the
   * rate limit lets it, for ever.
   */
  readonly minRenewalAgeMs?: number;
  /** Enroll calls per address (default a burst of 20, then one every 6 s). */
  readonly enrollLimit?: BucketLimit;
  /** Whether a name is a node the cluster knows (registered); its certificates are a cluster admin's to issue. */
  readonly isNode?: (name: string, signal: AbortSignal) => Promise<boolean>;
}

const TOKENS = "pki/tokens/";
const CERTS = "pki/certs/";
const TOKEN = /^dvt_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
/** Enroll calls per address by default: bucket of 20, refilled at one every 6 s. */
const ENROLL_LIMIT: BucketLimit = { ratePerSecond: 1 / 6, burst: 20 };

const sha256 = (s: string) => createHash("sha256").update(s).digest();
const ts = (ms: bigint | number) =>
  BigInt(ms) === 0n
    ? undefined
    : { seconds: BigInt(ms) / 1000n, nanos: Number(BigInt(ms) % 1000n) * 1_000_000 };

/** A serial as `openssl x509 -serial` prints it: upper-case hex, whole bytes. */
function displaySerial(serial: string): string {
  const s = serial.toUpperCase();
  return s.length % 2 === 1 ? `0${s}` : s;
}

/** The SHA-256 fingerprint of a PEM certificate, as `sha256:hex` (what agents pin). */
export function caFingerprint(pem: string): string {
  return `sha256:${new X509Certificate(pem).fingerprint256.replace(/:/g, "").toLowerCase()}`;
}

/** EnrollmentService: tokens, enrollment, renewal, revocation and the issued-certificate list. */
/**
 * Whether `name` is a node's: registered, named by an enrollment token (a
 * node about to enrol), or bound to the node role. Node ids are lower-case,
 * so a name is compared lower-cased. Only a cluster admin may mint
 * credentials or bindings for such a name.
 */
export async function nodeNamed(
  deps: Pick<EnrollmentServiceDeps, "store" | "bindings" | "policy" | "isNode">,
  name: string,
  signal: AbortSignal,
): Promise<boolean> {
  const id = name.toLowerCase();
  const bound = [...deps.bindings.all(), ...deps.policy().bindings].some(
    (b) => b.principal.toLowerCase() === id && b.roles.includes("node"),
  );
  if (bound || ((await deps.isNode?.(id, signal)) ?? false)) return true;
  for await (const kv of rangeAll(deps.store, TOKENS, { signal })) {
    if (decodeMessage(EnrollmentTokenRecordSchema, kv).nodeName === id) return true;
  }
  return false;
}

/**
 * Whether `name` is a node that exists: registered, or holding the node role
 * cluster-wide (what enrollment gives). Its certificates renew for a full
 * term, and a new token for it is a cluster admin's. Narrower than
 * {@link nodeNamed}: a binding to the node role in a tenant, which a tenant
 * admin may set, makes no certificate last longer.
 */
async function clusterNode(
  deps: Pick<EnrollmentServiceDeps, "bindings" | "policy" | "isNode">,
  name: string,
  signal: AbortSignal,
): Promise<boolean> {
  const id = name.toLowerCase();
  const bound = [...deps.bindings.all(), ...deps.policy().bindings].some(
    (b) => b.principal.toLowerCase() === id && (b.tenant ?? "") === "" && b.roles.includes("node"),
  );
  return bound || ((await deps.isNode?.(id, signal)) ?? false);
}

const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;
/** Passes over a revoked certificate's successors before renewals racing it count as a CONFLICT. */
const MAX_REVOCATION_PASSES = 16;

export function createEnrollmentService(deps: EnrollmentServiceDeps): ServiceBinding {
  const { store, clock } = deps;
  const limiter = createRateLimiter(clock);
  const days = deps.certificateDays ?? 30;
  const requireCa = (): CertificateAuthority => {
    if (deps.ca === undefined) throw new RpcError("CA_UNAVAILABLE");
    return deps.ca;
  };

  const ledger = createCertificateLedger(store, clock);
  /**
   * Issues a certificate for `name` (a client certificate unless told
   * otherwise) and records it: as the one renewal of `renewing` when given.
   */
  async function issue(
    name: string,
    csrPem: string,
    issuedBy: string,
    signal: AbortSignal,
    how: { usage: "client" | "server"; sans: readonly string[]; days: number } = {
      usage: "client",
      sans: [],
      days,
    },
    renewing?: { serial: string; subject: string; issuer: string },
  ) {
    const ca = requireCa();
    let accepted: Awaited<ReturnType<typeof acceptCsr>>;
    try {
      accepted = await acceptCsr(csrPem);
    } catch (err) {
      if (err instanceof CsrError)
        throw new RpcError("INVALID_ARGUMENT", { message: `csr_pem: ${err.message}` });
      throw err;
    }
    const { certPem } = await ca.issue({
      commonName: name,
      usage: how.usage,
      altNames: how.sans,
      validityDays: how.days,
      spkiDer: accepted.spkiDer,
      now: new Date(clock.now()),
    });
    const x = new X509Certificate(certPem);
    const kind = { issuedBy, kind: how.usage };
    const record =
      renewing === undefined
        ? await ledger.record(certPem, kind, signal)
        : await ledger.renew(renewing, certPem, kind, signal);
    return {
      certificatePem: certPem,
      chainPem: ca.certPem,
      caPem: ca.certPem,
      serial: x.serialNumber,
      notAfter: ts(record.notAfterMs),
    };
  }

  const isNodeName = (name: string, signal: AbortSignal) => nodeNamed(deps, name, signal);

  const info = (r: CertificateRecord) => ({
    serial: displaySerial(r.serial),
    subject: r.subject,
    sans: r.sans,
    issued: ts(r.issuedAtMs),
    notAfter: ts(r.notAfterMs),
    issuer: r.issuer,
    issuedBy: r.issuedBy,
    kind: r.kind,
    revoked: ts(r.revokedAtMs),
    revocationReason: r.revocationReason,
    supersededBy: r.supersededBy === "" ? "" : displaySerial(r.supersededBy),
  });

  const updateCert = async (
    serial: string,
    change: (r: CertificateRecord) => CertificateRecord,
    signal: AbortSignal,
  ) => {
    for (let attempt = 0; attempt < 8; attempt++) {
      const cur = await getMessage(store, CertificateRecordSchema, CERTS + serial, { signal });
      if (cur === undefined) return undefined;
      const next = change(cur.message);
      const r = await store.txn(
        {
          compares: [{ key: CERTS + serial, modRevision: cur.modRevision }],
          success: [
            {
              type: "put",
              key: CERTS + serial,
              value: encodeMessage(CertificateRecordSchema, next),
            },
          ],
        },
        { signal },
      );
      if (r.succeeded) return next;
    }
    throw new RpcError("CONFLICT");
  };

  return defineService(
    EnrollmentService,
    {
      // The cluster CA is cluster-wide: a tenant-confined caller may not use it.
      createEnrollmentToken: {
        permission: "pki:token:create",
        mutating: true,
        target: { kind: "cluster" },
      },
      enroll: { permission: null, mutating: true, access: "public" },
      renewCertificate: { permission: null, mutating: true },
      revokeCertificate: {
        permission: "pki:cert:revoke",
        mutating: true,
        target: { kind: "cluster" },
      },
      listCertificates: {
        permission: "pki:cert:list",
        mutating: false,
        target: { kind: "cluster" },
      },
      issueCertificate: {
        permission: "pki:cert:issue",
        mutating: true,
        target: { kind: "cluster" },
      },
    },
    {
      async createEnrollmentToken(req, ctx) {
        const ca = requireCa();
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
        await store.put(TOKENS + id, encodeMessage(EnrollmentTokenRecordSchema, record), {
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
        requireCa();
        const source = sourceGroupOf(sourceOf(ctx.peer.address));
        // Only guessing counts toward the lockout: the right secret for a spent
        // or expired token (a retry, a race) is no attack on the secret.
        // Counted per token id, so a flood from a shared address locks out no good token.
        const credential = `enroll:${TOKEN.exec(req.token)?.[1] ?? ""}`;
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
        const m = TOKEN.exec(req.token);
        if (m === null) refuse("malformed enrollment token");
        const [, id, secret] = m as unknown as [string, string, string];
        const found = await getMessage(store, EnrollmentTokenRecordSchema, TOKENS + id, {
          signal: ctx.signal,
        });
        const presented = sha256(secret);
        if (found === undefined) refuse("unknown enrollment token");
        const tok = (found as NonNullable<typeof found>).message;
        if (!timingSafeEqual(presented, Buffer.from(tok.secretSha256)))
          refuse("enrollment token secret mismatch");
        if (tok.usedAtMs !== 0n) refuse("enrollment token already used", false);
        if (BigInt(clock.now()) >= tok.expiresAtMs) refuse("enrollment token expired", false);
        // A token anyone but a cluster admin made is for a new node: made before the name became
        // a node (enrolled, registered) meanwhile, it would hand that node's identity over.
        if (!tok.forExistingNode && (await clusterNode(deps, tok.nodeName, ctx.signal)))
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
              { key: TOKENS + id, modRevision: (found as NonNullable<typeof found>).modRevision },
            ],
            success: [
              {
                type: "put",
                key: TOKENS + id,
                value: encodeMessage(
                  EnrollmentTokenRecordSchema,
                  create(EnrollmentTokenRecordSchema, { ...tok, usedAtMs: BigInt(clock.now()) }),
                ),
              },
            ],
          },
          { signal: ctx.signal },
        );
        if (!spent.succeeded) refuse("enrollment token already used", false);
        ctx.notes.principal = { id: tok.nodeName, method: "none", roles: [] };
        const issued = await issue(tok.nodeName, req.csrPem, tok.createdBy, ctx.signal);
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
        const left =
          end === undefined || !Number.isFinite(end) ? days : (end - clock.now()) / DAY_MS;
        // Once per certificate: the successor renews next, so a stolen copy cannot fork the chain.
        return issue(
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
      async revokeCertificate(req, ctx) {
        const serial = normalizeSerial(req.serial.replace(/:/g, ""));
        await deps.revocations.revoke(serial, req.reason || "revoked", ctx.signal);
        const mark = async (other: string, why: string) => {
          await deps.revocations.revoke(other, why, ctx.signal);
          await updateCert(
            other,
            (c) =>
              create(CertificateRecordSchema, {
                ...c,
                revokedAtMs: c.revokedAtMs === 0n ? BigInt(clock.now()) : c.revokedAtMs,
                revocationReason: why,
              }),
            ctx.signal,
          );
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
        const r = await updateCert(
          serial,
          (c) =>
            create(CertificateRecordSchema, {
              ...c,
              revokedAtMs: c.revokedAtMs === 0n ? BigInt(clock.now()) : c.revokedAtMs,
              revocationReason: req.reason,
            }),
          ctx.signal,
        );
        return r === undefined
          ? {
              serial: displaySerial(serial),
              revoked: ts(clock.now()),
              revocationReason: req.reason,
            }
          : info(r);
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
        return issue(req.commonName, req.csrPem, principalOf(ctx).id, ctx.signal, {
          usage,
          sans: req.sans,
          days: ttl,
        });
      },
      async listCertificates(req, ctx) {
        const out = [];
        for await (const kv of rangeAll(store, CERTS, { signal: ctx.signal })) {
          const r = decodeMessage(CertificateRecordSchema, kv);
          if (req.subject === "" || r.subject === req.subject) out.push(info(r));
        }
        return { certificates: out };
      },
    },
  );
}
