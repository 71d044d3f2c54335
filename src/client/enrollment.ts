import { createHash, X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { connect, type DetailedPeerCertificate, type PeerCertificate } from "node:tls";
import { EnrollmentService } from "../gen/debvisor/v1/pki_pb.js";
import { openChannel } from "./channel.js";
import { finishFileSet, writeFileSet } from "./file-set.js";
import { createServiceClient } from "./service-client.js";

/** Where a node keeps its identity. */
export interface AgentFiles {
  readonly dir: string;
  readonly key: string;
  readonly cert: string;
  readonly ca: string;
}

/** The files of an agent directory. */
export function agentFiles(dir: string): AgentFiles {
  return { dir, key: join(dir, "node.key"), cert: join(dir, "node.crt"), ca: join(dir, "ca.crt") };
}

/** Completes a renewal or enrollment interrupted while it moved the new key and certificate in. */
export function finishAgentFiles(files: AgentFiles): void {
  finishFileSet(files.key);
}

/** A problem the operator can act on; the message says what. */
export class AgentError extends Error {
  override readonly name = "AgentError";
}

const normalizeFingerprint = (f: string) =>
  f
    .replace(/^sha256:/i, "")
    .replace(/:/g, "")
    .toLowerCase();

/** The SHA-256 fingerprint of a PEM certificate (the first, of several) as `sha256:hex`: what `hvctl ca show` prints and nodes pin. */
export function caFingerprint(pem: string): string {
  return pinnedFingerprint(new X509Certificate(pem).fingerprint256);
}

/** A fingerprint as an operator gives it (`sha256:` and colons optional, any case) in the form of {@link caFingerprint}. */
export function pinnedFingerprint(given: string): string {
  return `sha256:${normalizeFingerprint(given)}`;
}

/**
 * Connects once without trusting anything, and returns the certificate in
 * the server's chain whose SHA-256 fingerprint is the pinned one. Nothing is
 * sent on that connection; everything after it is verified against this CA.
 */
export function fetchPinnedCa(
  server: string,
  fingerprint: string,
  timeoutMs = 10_000,
): Promise<string> {
  const want = normalizeFingerprint(fingerprint);
  if (!/^[0-9a-f]{64}$/.test(want))
    return Promise.reject(new AgentError("--ca-fingerprint: expected sha256:<64 hex digits>"));
  const at = server.lastIndexOf(":");
  const host = server.slice(0, at).replace(/^\[|\]$/g, "");
  const port = Number(server.slice(at + 1));
  return new Promise((resolve, reject) => {
    const socket = connect({
      host,
      port,
      rejectUnauthorized: false,
      ALPNProtocols: ["h2"],
      timeout: timeoutMs,
    });
    socket.once("timeout", () => {
      socket.destroy();
      reject(new AgentError(`${server}: no TLS answer within ${timeoutMs} ms`));
    });
    socket.once("error", (err) => reject(new AgentError(`${server}: ${err.message}`)));
    socket.once("secureConnect", () => {
      const seen = new Set<string>();
      let c: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
      while (c?.raw !== undefined && !seen.has(c.fingerprint256)) {
        seen.add(c.fingerprint256);
        if (normalizeFingerprint(c.fingerprint256) === want) {
          socket.destroy();
          const b64 = c.raw.toString("base64").replace(/(.{64})/g, "$1\n");
          return resolve(
            `-----BEGIN CERTIFICATE-----\n${b64.trimEnd()}\n-----END CERTIFICATE-----\n`,
          );
        }
        c = c.issuerCertificate;
      }
      socket.destroy();
      reject(
        new AgentError(
          `${server}: no certificate in its chain has the pinned fingerprint (wrong server, or a man in the middle)`,
        ),
      );
    });
  });
}

/** Options of {@link enroll}. */
export interface EnrollOptions {
  readonly server: string;
  readonly token: string;
  readonly caFingerprint: string;
  readonly dir: string;
  /** Name to verify the server certificate against, when it differs from the host in `server`. */
  readonly tlsServerName?: string;
  readonly timeoutMs?: number;
  /** Checks the server's certificate further (the directory's revoked server certificates). */
  readonly verifyServer?: (cert: PeerCertificate) => Error | undefined;
}

/**
 * The key and CSR of an enrollment not finished yet, kept (0600) in the
 * agent directory until it is: the server answers a spent token again only
 * for the key it was spent for, so enrolling again after a call given up on
 * (its deadline, a dropped connection) must send the same CSR. Kept with the
 * SHA-256 of the token they were sent with and reused with that token only:
 * with another there is nothing to retry, and a directory copied after a
 * failed enrollment (a machine image) gave every copy one private key.
 */
const PENDING = "enroll.pending";

interface Pending {
  readonly token: string;
  readonly csrPem: string;
  readonly keyPem: string;
}

/** The pending enrollment in `path` for `token`; undefined when there is none, or it does not parse. */
function readPending(path: string, token: string): Pending | undefined {
  if (!existsSync(path)) return undefined;
  try {
    const p = JSON.parse(readFileSync(path, "utf8")) as Partial<Pending> | null;
    if (typeof p?.csrPem !== "string" || typeof p.keyPem !== "string") return undefined;
    return p.token === token ? (p as Pending) : undefined;
  } catch {
    return undefined;
  }
}

async function pendingCsr(path: string, tokenText: string): Promise<Pending> {
  finishFileSet(path);
  const token = createHash("sha256").update(tokenText).digest("hex");
  const kept = readPending(path, token);
  if (kept !== undefined) return kept;
  const made = { token, ...(await lazyCreateCsr(hostname().toLowerCase().slice(0, 63) || "node")) };
  await writeFileSet([{ path, text: JSON.stringify(made), mode: 0o600 }]);
  return made;
}

/**
 * Joins a cluster with a one-time token: generates the key here (it never
 * leaves this machine), pins the CA, sends a CSR, and writes the key (0600),
 * the certificate and the CA to `dir`. Run again after a failure, it sends
 * the same CSR (see {@link PENDING}).
 */
export async function enroll(
  options: EnrollOptions,
): Promise<{ serial: string; subject: string; files: AgentFiles }> {
  const files = agentFiles(options.dir);
  mkdirSync(files.dir, { recursive: true, mode: 0o700 });
  const caPem = await fetchPinnedCa(options.server, options.caFingerprint, options.timeoutMs);
  const pending = join(files.dir, PENDING);
  const { csrPem, keyPem } = await pendingCsr(pending, options.token);
  // The token is a secret: a server the directory was told is revoked is not sent it.
  const channel = openChannel(
    {
      name: "enroll",
      server: options.server,
      caPem,
      tlsServerName: options.tlsServerName,
    },
    {},
    options.verifyServer,
  );
  try {
    const r = await createServiceClient(EnrollmentService, channel).enroll(
      { token: options.token, csrPem },
      { timeoutMs: options.timeoutMs ?? 30_000 },
    );
    await writeFileSet([
      { path: files.key, text: keyPem, mode: 0o600 },
      { path: files.cert, text: r.certificatePem, mode: 0o644 },
      { path: files.ca, text: r.caPem, mode: 0o644 },
    ]);
    rmSync(pending, { force: true });
    return { serial: r.serial, subject: subjectOf(r.certificatePem), files };
  } finally {
    channel.close();
  }
}

/**
 * Renews the certificate in `dir` over mTLS with itself: a new key, the same
 * identity. `verifyServer` checks the server's certificate further (the
 * agent's revoked server certificates), as {@link openChannel}'s does.
 */
export async function renew(options: {
  server: string;
  dir: string;
  tlsServerName?: string;
  timeoutMs?: number;
  verifyServer?: (cert: PeerCertificate) => Error | undefined;
}): Promise<{ serial: string; files: AgentFiles }> {
  const files = agentFiles(options.dir);
  finishAgentFiles(files);
  for (const f of [files.key, files.cert, files.ca])
    if (!existsSync(f)) throw new AgentError(`${f}: missing; enroll first`);
  const certPem = readFileSync(files.cert, "utf8");
  const { csrPem, keyPem } = await lazyCreateCsr(subjectOf(certPem) || "node");
  const channel = openChannel(
    {
      name: "renew",
      server: options.server,
      caPem: readFileSync(files.ca, "utf8"),
      certPem,
      keyPem: readFileSync(files.key, "utf8"),
      tlsServerName: options.tlsServerName,
    },
    {},
    options.verifyServer,
  );
  try {
    const r = await createServiceClient(EnrollmentService, channel).renewCertificate(
      { csrPem },
      { timeoutMs: options.timeoutMs ?? 30_000 },
    );
    // Key and certificate as one: a crash between the two left a key its certificate does not
    // match, and the node had to be enrolled again.
    await writeFileSet([
      { path: files.key, text: keyPem, mode: 0o600 },
      { path: files.cert, text: r.certificatePem, mode: 0o644 },
    ]);
    return { serial: r.serial, files };
  } finally {
    channel.close();
  }
}

function subjectOf(pem: string): string {
  const m = /CN=([^\n,]+)/.exec(new X509Certificate(pem).subject);
  return m?.[1] ?? "";
}

/** The pki layer (WebCrypto, @peculiar/x509) loads only when a key is made: hvctl's start-up does not pay for it. */
async function lazyCreateCsr(commonName: string): Promise<{ csrPem: string; keyPem: string }> {
  const { createCsr } = await import("../pki/index.js");
  return createCsr(commonName);
}
