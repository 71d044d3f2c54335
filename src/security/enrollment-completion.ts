// What an enrolment does once its token is spent: the certificate issued and
// kept with the spend, the name bound to the node role. It runs on the
// server's own bounded signal, never the caller's: a node that gives up (its
// deadline, a dropped connection) after the spend finds its enrolment done,
// and its retry with the same token and the same key gets that certificate
// again. Another key is refused: the token was spent for this one.
import { createHash, X509Certificate } from "node:crypto";
import { RpcError, timeoutSignal } from "../core/index.js";
import type { EnrollmentTokenRecord } from "../gen/debvisor/store/v1/records_pb.js";
import { acceptCsr } from "../pki/index.js";
import type { TxnOp } from "../store/index.js";
import { ts } from "./certificate-info.js";
import type { EnrollmentShared } from "./enrollment-service.js";
import { ENROLLING } from "./enrollment-token.js";
import { clusterNode } from "./node-named.js";

/** Where a spent token keeps what it was spent for: `pki/enrolled/<token id>`, JSON {@link Spend}. */
const SPENDS = "pki/enrolled/";
/** How long the server gives an enrolment, from its spend, to be issued and bound. */
const FINISH_MS = 30_000;
/** Compare-and-swap attempts on a spend record before giving up with CONFLICT. */
const MAX_ATTEMPTS = 6;

/** What a token was spent for, and how far its enrolment got. */
interface Spend {
  /** SHA-256 (hex) of the public key (SPKI DER) the token was spent for. */
  readonly spki: string;
  /** The certificate issued for that key, once it is. */
  readonly certificatePem?: string;
  /** Whether the name is bound to the node role (set once it is). */
  readonly bound?: boolean;
}

/** What Enroll answers. */
export interface Enrolled {
  readonly certificatePem: string;
  readonly chainPem: string;
  readonly caPem: string;
  readonly serial: string;
  readonly notAfter: ReturnType<typeof ts>;
}

/** The part of an enrolment after its token is spent; see the file's head. */
export interface EnrollmentCompletion {
  /** A signal for the spend and what follows it: the server's own, bounded, not the caller's. */
  signal(): AbortSignal;
  /** The store operation, for the spend's transaction, that records the token `id` spent for `csrPem`'s key. */
  spendOp(id: string, spkiDer: Uint8Array): TxnOp;
  /** Whether token `id` was spent for the key of `csrPem` (false for a bad CSR, or a spend not recorded). */
  sameKey(id: string, csrPem: string, signal: AbortSignal): Promise<boolean>;
  /**
   * Issues (unless it was) and binds (unless it was) the enrolment of the
   * spent token `id`, after any run of it in progress here; `fresh` is false
   * when its certificate was issued before (a re-delivery); a certificate
   * revoked since is answered, not bound again: the caller refuses it.
   * Undefined when nothing was issued and the name has its holder since:
   * enrolled by another token (its claim is that token's), or, for a token
   * not a cluster admin's, made a node otherwise.
   */
  finish(
    id: string,
    tok: EnrollmentTokenRecord,
    csrPem: string,
  ): Promise<{ enrolled: Enrolled; fresh: boolean } | undefined>;
}

const digest = (spkiDer: Uint8Array) => createHash("sha256").update(spkiDer).digest("hex");
const encode = (s: Spend) => new TextEncoder().encode(JSON.stringify(s));
const decoder = new TextDecoder();

/** The completion the Enroll handler uses, with its runs in progress on this server. */
export function createEnrollmentCompletion(shared: EnrollmentShared): EnrollmentCompletion {
  const { deps, issuer } = shared;
  const { store } = deps;
  const running = new Map<string, Promise<{ enrolled: Enrolled; fresh: boolean } | undefined>>();

  const read = async (id: string, signal: AbortSignal) => {
    const kv = await store.get(SPENDS + id, { signal });
    return kv && { spend: JSON.parse(decoder.decode(kv.value)) as Spend, kv };
  };

  /** Binds the name to the node role cluster-wide, added to the roles it has there. */
  async function bind(tok: EnrollmentTokenRecord, id: string, signal: AbortSignal) {
    // A binding in some tenant (one a tenant admin set before the node existed) never stands in for it.
    const bound = deps.bindings.all().find((b) => b.principal === tok.nodeName && b.tenant === "");
    if (bound?.roles.includes("node")) return;
    await deps.bindings.set(
      { principal: tok.nodeName, roles: [...(bound?.roles ?? []), "node"] },
      `enrollment:${id}`,
      signal,
    );
  }

  /** Takes the spend of `id` one step on (issue, then bind) per write, until both are done. */
  async function complete(id: string, tok: EnrollmentTokenRecord, csrPem: string) {
    const signal = timeoutSignal(FINISH_MS);
    let fresh = false;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const cur = await read(id, signal);
      if (cur === undefined)
        throw new RpcError("INTERNAL", { cause: new Error(`token ${id} spent, no spend record`) });
      const { spend, kv } = cur;
      // Done; or its certificate revoked since, when binding the name would undo the revocation.
      if (
        spend.certificatePem !== undefined &&
        (spend.bound === true || revoked(spend.certificatePem))
      )
        return { enrolled: answer(spend.certificatePem), fresh };
      let next: Spend;
      let issuing = false;
      const compares = [{ key: SPENDS + id, modRevision: kv.modRevision }];
      if (spend.certificatePem === undefined) {
        // Nothing issued, and the name enrolled by another token since (its claim is that
        // token's), or, for a token not a cluster admin's, made a node otherwise (the first
        // spend's rule): issuing now would make a second holder of the name.
        const claim = await store.get(ENROLLING + tok.nodeName.toLowerCase(), { signal });
        if (claim === undefined || decoder.decode(claim.value) !== id) return undefined;
        if (!tok.forExistingNode && (await clusterNode(deps, tok.nodeName, signal)))
          return undefined;
        compares.push({ key: claim.key, modRevision: claim.modRevision });
        const issued = await issuer.issue(tok.nodeName, csrPem, tok.createdBy, signal);
        next = { ...spend, certificatePem: issued.certificatePem };
        issuing = true;
      } else {
        await bind(tok, id, signal);
        next = { ...spend, bound: true };
      }
      const txn = await store.txn(
        { compares, success: [{ type: "put", key: SPENDS + id, value: encode(next) }] },
        { signal },
      );
      // Lost to a run on another server: its certificate is the one, read on the next turn.
      if (txn.succeeded && issuing) fresh = true;
    }
    throw new RpcError("CONFLICT");
  }

  const revoked = (certificatePem: string) =>
    deps.revocations.isRevoked(new X509Certificate(certificatePem).serialNumber);

  function answer(certificatePem: string): Enrolled {
    const ca = issuer.requireCa();
    const x = new X509Certificate(certificatePem);
    return {
      certificatePem,
      chainPem: ca.certPem,
      caPem: ca.certPem,
      serial: x.serialNumber,
      notAfter: ts(BigInt(Date.parse(x.validTo))),
    };
  }

  return {
    signal: () => timeoutSignal(FINISH_MS),
    spendOp: (id, spkiDer) => ({
      type: "put",
      key: SPENDS + id,
      value: encode({ spki: digest(spkiDer) }),
    }),
    async sameKey(id, csrPem, signal) {
      const accepted = await acceptCsr(csrPem).catch(() => undefined);
      if (accepted === undefined) return false;
      return (await read(id, signal))?.spend.spki === digest(accepted.spkiDer);
    },
    finish(id, tok, csrPem) {
      // After the run in progress (the caller that gave up, say): it issues, this one re-delivers.
      const before = running.get(id)?.catch(() => undefined) ?? Promise.resolve();
      const run = before.then(() => complete(id, tok, csrPem));
      running.set(id, run);
      const forget = () => {
        if (running.get(id) === run) running.delete(id);
      };
      run.then(forget, forget);
      return run;
    },
  };
}
