import { X509Certificate } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { ContextFileError } from "../client/index.js";
import { METHOD_PERMISSIONS } from "./permissions.js";

/** hvctl's exit codes, one per class of failure, so scripts can tell them apart. */
export const EXIT = Object.freeze({
  /** Also a watch or follow the user stopped with Ctrl-C: nothing failed. */
  ok: 0,
  /** Anything not below: a refused precondition, a conflict, a rate limit, "no" from can-i. */
  other: 1,
  /** Bad flags or arguments (also those the server rejects as INVALID_ARGUMENT), or a bad configuration file. */
  usage: 2,
  unauthenticated: 3,
  permissionDenied: 4,
  notFound: 5,
  /** The server cannot be reached (or TLS to it fails), or it is unavailable for now. */
  unavailable: 6,
});

/** The exit codes as `--help` and the README list them. */
export const EXIT_CODES_HELP = `Exit codes:
  0  success; also a watch or follow (--watch, tail -f, watch, run) stopped with Ctrl-C
  1  failed for another reason (refused precondition, conflict, rate limit, "no" from auth can-i)
  2  usage: bad flags or arguments, or a bad configuration file
  3  unauthenticated: the server did not accept the context's credential
  4  permission denied: the credential lacks the permission
  5  not found
  6  unavailable: the server cannot be reached, TLS to it failed, or it is unavailable for now`;

/** A command used wrongly (a bad flag value, a missing argument); exit code 2. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

/** The server could not be reached outside a gRPC call (ca fetch); exit code 6. */
export class UnavailableError extends Error {
  override readonly name = "UnavailableError";
}

/** A failed call, with the method it was (the error alone does not say). */
export class CallError extends Error {
  override readonly name = "CallError";
  readonly code: grpc.status;
  readonly details: string;
  readonly metadata: grpc.Metadata | undefined;
  /** The permission the call needs, for the "permission denied: you need ..." line. */
  permission: string | null | undefined;

  constructor(
    readonly method: string,
    error: Partial<grpc.ServiceError>,
  ) {
    super(error.details ?? error.message ?? "call failed");
    this.code = error.code ?? grpc.status.UNKNOWN;
    this.details = error.details ?? error.message ?? "";
    this.metadata = error.metadata;
    this.permission = METHOD_PERMISSIONS[method];
  }

  /** A metadata value from the response trailers, if sent. */
  trailer(key: string): string | undefined {
    const v = this.metadata?.get(key)[0];
    return v === undefined ? undefined : String(v);
  }
}

/** What the failure explainer knows about the connection. */
export interface ConnectionFacts {
  readonly server?: string;
  readonly context?: string;
  /** mtls or token: what the connection authenticates with. */
  readonly credential?: string;
  /** Where the credential came from: `context "dev"`, `$DEBVISOR_TOKEN`, `--token-file F`. */
  readonly credentialFrom?: string;
  readonly certPem?: string;
  readonly caPem?: string;
  readonly now?: number;
  /** The serial of a revoked server certificate a server presented (refused in the handshake). */
  readonly revokedServer?: string;
}

/** One line for the operator and an exit code. */
export interface Failure {
  readonly message: string;
  readonly exitCode: number;
}

/**
 * Explains any error a command throws as one line (what failed, what to do,
 * the gRPC code and the request id) and picks the exit code of its class.
 */
export function describeFailure(err: unknown, facts: ConnectionFacts = {}): Failure {
  if (err instanceof UsageError || err instanceof ContextFileError)
    return { message: err.message, exitCode: EXIT.usage };
  if (err instanceof UnavailableError) return { message: err.message, exitCode: EXIT.unavailable };
  if (err instanceof CallError) return describeCall(err, facts);
  const e = err as { code?: unknown; details?: unknown; message?: unknown };
  if (typeof e.code === "number" && typeof e.details === "string")
    return describeCall(new CallError("", err as grpc.ServiceError), facts);
  const code = typeof e.code === "string" ? e.code : "";
  if (code === "EACCES" || code === "ENOENT" || code === "EEXIST" || code === "ENOTDIR")
    return { message: String(e.message), exitCode: EXIT.usage };
  return { message: String(e.message ?? err), exitCode: EXIT.other };
}

const CODE_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(grpc.status)
    .filter(([, v]) => typeof v === "number")
    .map(([k, v]) => [v, k]),
);

function exitCodeOf(code: grpc.status): number {
  switch (code) {
    case grpc.status.INVALID_ARGUMENT:
      return EXIT.usage;
    case grpc.status.UNAUTHENTICATED:
      return EXIT.unauthenticated;
    case grpc.status.PERMISSION_DENIED:
      return EXIT.permissionDenied;
    case grpc.status.NOT_FOUND:
      return EXIT.notFound;
    case grpc.status.UNAVAILABLE:
      return EXIT.unavailable;
    default:
      return EXIT.other;
  }
}

/** What to do about a reason the server names; the code's advice otherwise. */
const REASON_ADVICE: Record<string, string> = {
  ESCALATION_DENIED: "grant only roles whose permissions you hold yourself",
  NODE_NOT_FOUND: "hvctl node list shows the nodes you may see",
  VM_NOT_FOUND: "hvctl vm list shows the VMs you may see",
  DATASET_NOT_FOUND:
    "hvctl dataset list shows the datasets you may see, named as hvctl takes them (zfs:POOL/NAME, rbd:POOL/IMAGE)",
  SNAPSHOT_NOT_FOUND: "hvctl snapshot list DATASET shows its snapshots",
  SNAPSHOT_HELD: "release its ZFS hold (zfs release) first",
  SNAPSHOT_HAS_CLONES:
    "flatten (hvctl image flatten rbd:POOL/CLONE) or delete (hvctl image delete rbd:POOL/CLONE) each image cloned from it first; hvctl image list shows them",
  IMAGE_HAS_CLONES:
    "flatten (hvctl image flatten rbd:POOL/CLONE) or delete each clone of its templates first; hvctl image list -o wide shows them",
  IMAGE_IN_USE: "a VM uses it as a disk (hvctl dataset list shows which)",
  DISK_IN_USE:
    "a disk belongs to one VM: delete that VM first, or give this one a clone (hvctl image template, then hvctl image clone)",
  IMAGE_NOT_A_CLONE:
    "only a clone has a template to be flattened from (PARENT in hvctl image list)",
  TENANT_FILTER_DENIED: "leave out --tenant: your credential already sees only its tenants",
  SNAPSHOT_IN_USE: "it goes once the job's next run replaces it, or when the job is deleted",
  SNAPSHOT_NOT_PROTECTED: "make a template with hvctl image template POOL/IMAGE",
  REPLICATION_JOB_NOT_FOUND: "hvctl replication list shows the jobs you may see",
  REPLICATION_JOB_EXISTS:
    "another job has that id, or already sends the dataset to that node: hvctl replication list shows them",
  REPLICATION_RUNNING: "wait for the run to end (hvctl replication watch ID)",
  REPLICATION_DIVERGED:
    "the target's copy holds data the source lacks (after a failover: the old primary's last writes); keep what you need from it, then remove its newer snapshots (or the dataset) there and run the job again",
  REPLICATION_SOURCE_MOVED: "a disk replicates from the node its vm runs on: plan it from there",
  REPLICATION_STREAM_REFUSED:
    "the source sent something other than a VM disk's volume; the target destroyed it. Check the source node (hvctl cert list) and revoke its certificate if it is not yours",
  APIKEY_NOT_FOUND: "hvctl apikey list shows the keys",
  ROLE_NOT_FOUND: "hvctl role list shows the roles",
  BINDING_NOT_FOUND: "hvctl binding list shows the bindings",
  ROLE_PROTECTED: "define a new role instead",
  APIKEY_REVOKED: "create a new key with hvctl apikey create",
  NODE_ID_TAKEN: "pick another id, or register it as the identity that registered it first",
  CA_UNAVAILABLE: "this server has no CA key; use the external CA that issues its certificates",
  RENEW_NEEDS_MTLS: "use a context whose credential is the client certificate to renew",
  CERT_ALREADY_RENEWED:
    "use the certificate it was renewed into; if that one is lost, get a new certificate (debvisor-agent enroll, hvctl cert issue)",
  CERT_TOO_NEW_TO_RENEW:
    "a certificate renews only an hour after it was issued (pki.minRenewalAgeSeconds): retry then",
  TOO_MANY_WATCHES:
    "close other watches of this identity (--watch, --wait, panel tabs), or have an operator raise limits.watchesPerPrincipal",
  REPORT_FROM_FUTURE: "the reporting machine's clock is ahead of the server's: fix it (NTP)",
  NOT_IMPLEMENTED: "this server does not do that yet; upgrade debvisor-rpcd",
  CONFLICT: "retry",
  AUDIT_UNAVAILABLE: "the server's audit trail cannot be written; retry once it can",
  STORE_UNAVAILABLE: "the server's state store is unreachable; retry later",
  SHUTTING_DOWN: "the server is restarting; retry in a moment",
  PAGE_TOKEN_INVALID: "start the listing again",
  MESSAGE_TOO_LARGE: "ask for fewer items",
};

/** What to do about an error catalogue reason (docs/errors.md), or undefined when hvctl has no advice. */
export function reasonAdvice(reason: string): string | undefined {
  return Object.hasOwn(REASON_ADVICE, reason) ? REASON_ADVICE[reason] : undefined;
}

function describeCall(err: CallError, facts: ConnectionFacts): Failure {
  const codeName = CODE_NAMES[err.code] ?? String(err.code);
  const requestId = err.trailer("x-request-id");
  const reason = err.trailer("debvisor-error-reason");
  const tail = ` (${codeName}${requestId === undefined ? "" : `, request ${requestId}`})`;
  const exitCode = exitCodeOf(err.code);
  // No reason and no request id: the call never reached the service (transport failure).
  if (reason === undefined && requestId === undefined) {
    const transport = describeTransport(err, facts);
    if (transport !== undefined) return { message: `${transport}${tail}`, exitCode };
  }
  const what = err.details || codeName.toLowerCase().replace(/_/g, " ");
  let advice = reason === undefined ? undefined : reasonAdvice(reason);
  if (advice === undefined) {
    switch (err.code) {
      case grpc.status.PERMISSION_DENIED:
        advice =
          typeof err.permission === "string"
            ? `you need ${err.permission}`
            : "your identity may not do this; hvctl auth whoami shows its roles";
        break;
      case grpc.status.UNAUTHENTICATED:
        advice = unauthenticatedAdvice(facts);
        break;
      case grpc.status.RESOURCE_EXHAUSTED: {
        const after = err.trailer("retry-after-ms");
        advice =
          after === undefined ? "retry later" : `retry in ${Math.ceil(Number(after) / 1000)}s`;
        break;
      }
      case grpc.status.INVALID_ARGUMENT:
        advice = err.details.startsWith('request_id "')
          ? "pick another --request-id, or leave it out (hvctl makes one)"
          : "see --help for the accepted values";
        break;
      case grpc.status.DEADLINE_EXCEEDED:
        advice = "raise --timeout, or check the server's load";
        break;
      case grpc.status.INTERNAL:
        advice = "the server's log has the cause under the request id";
        break;
      case grpc.status.UNAVAILABLE:
        advice = "retry later";
        break;
    }
  }
  return { message: `${what}${advice === undefined ? "" : `: ${advice}`}${tail}`, exitCode };
}

function unauthenticatedAdvice(facts: ConnectionFacts): string {
  const ctx = facts.context === undefined ? "the context" : `context "${facts.context}"`;
  if (facts.certPem !== undefined) {
    try {
      const cert = new X509Certificate(facts.certPem);
      const now = facts.now ?? Date.now();
      if (Date.parse(cert.validTo) < now)
        return `the client certificate of ${ctx} expired ${cert.validTo}; get a new one from an administrator (hvctl cert issue --client)`;
      if (Date.parse(cert.validFrom) > now)
        return `the client certificate of ${ctx} is not valid before ${cert.validFrom}; check this machine's clock`;
      if (facts.caPem !== undefined && !cert.checkIssued(new X509Certificate(facts.caPem)))
        return `the client certificate of ${ctx} was not issued by the cluster CA`;
    } catch {
      // An unreadable certificate: fall through to the general advice.
    }
    return `the server did not accept the client certificate of ${ctx} (revoked, or from another CA)`;
  }
  const from = facts.credentialFrom ?? ctx;
  if (facts.credential === "token")
    return `the server did not accept the token from ${from} (revoked, expired or mistyped)`;
  return `check the credential of ${from}`;
}

/** Names the likely cause of a failure to connect, from what Node's TLS and net layers reported. */
function describeTransport(err: CallError, facts: ConnectionFacts): string | undefined {
  const d = err.details;
  const at = facts.server === undefined ? "the server" : facts.server;
  const fix = "fix the context's server (--server, $DEBVISOR_SERVER)";
  if (facts.revokedServer !== undefined)
    return `the control plane's certificate ${facts.revokedServer} is revoked: ${at} presented it, so nothing was sent there; a stolen copy presents it, and so does a daemon not yet given its new certificate (docs/security.md)`;
  if (/ECONNREFUSED/.test(d))
    return `cannot connect to ${at}: nothing is listening there; start debvisor-rpcd or ${fix}`;
  if (/ENOTFOUND|EAI_AGAIN|Name resolution failed|DNS resolution failed/i.test(d))
    return `cannot connect to ${at}: the host name does not resolve; ${fix}`;
  if (/ETIMEDOUT|EHOSTUNREACH|ENETUNREACH/.test(d))
    return `cannot connect to ${at}: no route or no answer; check the address and any firewall`;
  if (/ERR_TLS_CERT_ALTNAME_INVALID|does not match certificate's altnames/.test(d)) {
    const names =
      /altnames: (?:Host|IP): .*? is not in the cert's (?:altnames|list): (.*?)(?:\. Resolution|$)/.exec(
        d,
      )?.[1];
    return `TLS to ${at} failed: the server's certificate is for another name${names === undefined ? "" : ` (${names})`}; connect by one of its names, or set tlsServerName in the context`;
  }
  if (/certificate has expired|CERT_HAS_EXPIRED/.test(d))
    return `TLS to ${at} failed: the server's certificate has expired; renew it on the server (debvisor-rpcd reloads it on SIGHUP)`;
  if (/certificate is not yet valid|CERT_NOT_YET_VALID/.test(d))
    return `TLS to ${at} failed: the server's certificate is not valid yet; check both machines' clocks`;
  if (
    /self[- ]signed certificate|unable to (verify the first certificate|get local issuer certificate|get issuer certificate)|UNABLE_TO_VERIFY_LEAF_SIGNATURE|certificate signature failure/.test(
      d,
    )
  )
    return `TLS to ${at} failed: the server's certificate is not signed by the context's CA (unknown CA); point the context's ca at the cluster CA (hvctl ca fetch)`;
  if (
    /wrong version number|packet length too long|unknown protocol|ECONNRESET|socket hang up/i.test(
      d,
    )
  )
    return `TLS to ${at} failed: the server does not speak TLS there, or dropped the connection; check the port`;
  if (/certificate|TLS|SSL|handshake|alert/i.test(d))
    return `TLS to ${at} failed: ${firstError(d)}`;
  if (err.code === grpc.status.UNAVAILABLE)
    return `cannot connect to ${at}: ${firstError(d)}; is debvisor-rpcd running there?`;
  if (err.code === grpc.status.DEADLINE_EXCEEDED)
    return `${at} did not answer in time: raise --timeout, or check the address and the server's load`;
  return undefined;
}

/** Why a stream broke, in a few words (the transport's first error, not grpc-js's whole note). */
export function streamBreak(err: CallError): string {
  return firstError(err.details);
}

/** The interesting part of a grpc-js "No connection established. Last error: ..." message. */
function firstError(details: string): string {
  const m = /Last error: (?:Error(?: \[[A-Z_]+\])?: )?(.*?)(?:\. Resolution note:.*)?$/.exec(
    details,
  );
  return (m?.[1] ?? details).trim();
}
