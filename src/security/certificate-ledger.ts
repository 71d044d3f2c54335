import { X509Certificate } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { type Clock, RpcError } from "../core/index.js";
import {
  type CertificateRecord,
  CertificateRecordSchema,
} from "../gen/debvisor/store/v1/records_pb.js";
import {
  decodeMessage,
  encodeMessage,
  getMessage,
  type KvStore,
  LOST,
  rangeAll,
  retryWhileLost,
  updateMessage,
} from "../store/index.js";
import { normalizeSerial, revokedKey } from "./revocations.js";

const CERTS = "pki/certs/";
/** Compare-and-swap attempts before a contended renewal gives up with CONFLICT. */
const MAX_ATTEMPTS = 8;

/** How a certificate came to be. */
export interface Issuance {
  /** The principal (or `dev-mode`, `server-renewal`) that had it issued. */
  readonly issuedBy: string;
  /** client or server; empty when unknown. */
  readonly kind: string;
}

/**
 * Every certificate the cluster CA issued, by whatever path (RPC, dev mode,
 * the server renewing itself), under pki/certs/<serial>, with the one it
 * renewed: a renewal chain that revocation follows.
 */
export interface CertificateLedger {
  /** Records a certificate unless it already is (create-if-absent); answers the record in force. */
  record(certPem: string, how: Issuance, signal?: AbortSignal): Promise<CertificateRecord>;
  /** The record of `serial` (hex, any case), if the ledger holds one. */
  get(serial: string, signal?: AbortSignal): Promise<CertificateRecord | undefined>;
  /**
   * Records `certPem` as the one renewal of `parent` (recorded now if it was
   * issued outside the ledger). CERT_ALREADY_RENEWED when `parent` was
   * renewed before or is revoked: a certificate renews at most once, and a
   * renewal racing a revocation loses.
   */
  renew(
    parent: { readonly serial: string; readonly subject: string; readonly issuer: string },
    certPem: string,
    how: Issuance,
    signal?: AbortSignal,
  ): Promise<CertificateRecord>;
  /**
   * The rest of `serial`'s renewal chain (never `serial` itself): every
   * serial renewed from it, directly or not, and every one it was renewed
   * from, which still authenticates until its own end.
   */
  lineage(
    serial: string,
    signal?: AbortSignal,
  ): Promise<{ descendants: string[]; ancestors: string[] }>;
  /**
   * Marks `serial`'s record revoked for `reason` (its first revocation time
   * kept); undefined when the ledger holds no record of it.
   */
  markRevoked(
    serial: string,
    reason: string,
    signal?: AbortSignal,
  ): Promise<CertificateRecord | undefined>;
  /** Every record, in serial order. */
  list(signal?: AbortSignal): AsyncIterable<CertificateRecord>;
}

/** The ledger in `store`. */
export function createCertificateLedger(store: KvStore, clock: Clock): CertificateLedger {
  const recordOf = (certPem: string, how: Issuance, renewedFrom = "") => {
    const x = new X509Certificate(certPem);
    return create(CertificateRecordSchema, {
      serial: normalizeSerial(x.serialNumber),
      subject: /CN=([^\n,]+)/.exec(x.subject)?.[1] ?? "",
      issuedAtMs: BigInt(clock.now()),
      notAfterMs: BigInt(Date.parse(x.validTo)),
      issuer: x.issuer,
      issuedBy: how.issuedBy,
      kind: how.kind,
      sans: (x.subjectAltName ?? "")
        .split(", ")
        .map((p) => p.replace(/^DNS:/, "").replace(/^IP Address:/, ""))
        .filter((n) => n !== ""),
      renewedFrom,
    });
  };
  const put = (r: CertificateRecord) => ({
    type: "put" as const,
    key: CERTS + r.serial,
    value: encodeMessage(CertificateRecordSchema, r),
  });
  return {
    async record(certPem, how, signal) {
      const rec = recordOf(certPem, how);
      const txn = await store.txn(
        { compares: [{ key: CERTS + rec.serial, modRevision: 0 }], success: [put(rec)] },
        { signal },
      );
      if (txn.succeeded) return rec;
      return (await getMessage(store, CertificateRecordSchema, CERTS + rec.serial, { signal }))
        ?.message as CertificateRecord;
    },
    async get(serial, signal) {
      return (
        await getMessage(store, CertificateRecordSchema, CERTS + normalizeSerial(serial), {
          signal,
        })
      )?.message;
    },
    async renew(parent, certPem, how, signal) {
      const from = normalizeSerial(parent.serial);
      const next = recordOf(certPem, how, from);
      return retryWhileLost(MAX_ATTEMPTS, async () => {
        const cur = await getMessage(store, CertificateRecordSchema, CERTS + from, { signal });
        if (cur !== undefined && cur.message.supersededBy !== "")
          throw new RpcError("CERT_ALREADY_RENEWED", {
            cause: new Error(`${from} was renewed into ${cur.message.supersededBy}`),
          });
        const old = create(CertificateRecordSchema, {
          ...(cur?.message ?? { serial: from, subject: parent.subject, issuer: parent.issuer }),
          supersededBy: next.serial,
        });
        const txn = await store.txn(
          {
            compares: [
              { key: CERTS + from, modRevision: cur?.modRevision ?? 0 },
              // Not revoked meanwhile: a revocation either sees this renewal or refuses it.
              { key: revokedKey(from), modRevision: 0 },
              { key: CERTS + next.serial, modRevision: 0 },
            ],
            success: [put(old), put(next)],
          },
          { signal },
        );
        if (txn.succeeded) return next;
        if ((await store.get(revokedKey(from), { signal })) !== undefined)
          throw new RpcError("CERT_ALREADY_RENEWED", { cause: new Error(`${from} is revoked`) });
        return LOST;
      });
    },
    async markRevoked(serial, reason, signal) {
      const { message } = await updateMessage(
        store,
        CertificateRecordSchema,
        CERTS + normalizeSerial(serial),
        (c) =>
          c &&
          create(CertificateRecordSchema, {
            ...c,
            revokedAtMs: c.revokedAtMs === 0n ? BigInt(clock.now()) : c.revokedAtMs,
            revocationReason: reason,
          }),
        { signal, attempts: MAX_ATTEMPTS },
      );
      return message;
    },
    async *list(signal) {
      for await (const kv of rangeAll(store, CERTS, { signal }))
        yield decodeMessage(CertificateRecordSchema, kv);
    },
    async lineage(serial, signal) {
      // Successor links, and renewed_from links (which also cover records
      // written before a certificate could renew only once).
      const children = new Map<string, string[]>();
      const parents = new Map<string, string[]>();
      const add = (map: Map<string, string[]>, from: string, to: string) => {
        const list = map.get(from) ?? [];
        if (!list.includes(to)) list.push(to);
        map.set(from, list);
      };
      const link = (parent: string, child: string) => {
        if (parent === "" || child === "") return;
        add(children, parent, child);
        add(parents, child, parent);
      };
      for await (const kv of rangeAll(store, CERTS, { signal })) {
        const r = decodeMessage(CertificateRecordSchema, kv);
        link(r.serial, r.supersededBy);
        link(r.renewedFrom, r.serial);
      }
      const root = normalizeSerial(serial);
      const walk = (links: Map<string, string[]>) => {
        const out: string[] = [];
        const seen = new Set([root]);
        const queue = [root];
        while (queue.length > 0) {
          for (const c of links.get(queue.shift() as string) ?? []) {
            if (seen.has(c)) continue;
            seen.add(c);
            out.push(c);
            queue.push(c);
          }
        }
        return out;
      };
      return { descendants: walk(children), ancestors: walk(parents) };
    },
  };
}
