/**
 * The strict shapes of what the libvirt driver puts on a virsh command line.
 * Arguments never pass through a shell, but virsh parses its own argv (a
 * value starting with `-` is an option) and its interactive mode splits on
 * blanks, quotes, `;` and `#`; so a domain name or URI outside these shapes
 * is refused before anything runs.
 */
import { checkString, ID_HINT, ID_PATTERN, RpcError } from "../core/index.js";

/**
 * Domain names the driver addresses: the VM id rule of the API (lower-case
 * DNS-label-like, 1-63 characters), so every domain it lists can be named
 * back through the API.
 */
export const DOMAIN_NAME_PATTERN = ID_PATTERN;

/**
 * libvirt connection URIs: `driver[+transport]://[user@][host][:port]/path[?query]`,
 * for example `qemu:///system`, `qemu+ssh://root@hv02/system?keyfile=/etc/dv/id`,
 * `test:///default`. No blanks, quotes, backslashes, `;`, `#`, `$` or backticks.
 */
export const LIBVIRT_URI_PATTERN =
  /^[a-z][a-z0-9]{0,15}(\+[a-z0-9]{1,15})?:\/\/([A-Za-z0-9._-]{1,64}@)?([A-Za-z0-9.-]{0,253}|\[[0-9A-Fa-f:.]{2,45}\])(:[0-9]{1,5})?\/[A-Za-z0-9._/-]{0,200}(\?[A-Za-z0-9._/=&%,-]{0,200})?$/;

const URI_HINT = "a libvirt URI such as qemu+ssh://host/system";
const URI_MAX = 512;

/** True when `name` is a domain name the driver may put on a command line. */
export function isDomainName(name: string): boolean {
  return name.length <= 63 && DOMAIN_NAME_PATTERN.test(name);
}

/** True when `uri` is a libvirt URI the driver may put on a command line. */
export function isLibvirtUri(uri: string): boolean {
  return uri.length <= URI_MAX && LIBVIRT_URI_PATTERN.test(uri);
}

/** Throws INVALID_ARGUMENT naming `field` unless `vmId` is a valid domain name. */
export function checkVmId(vmId: string, field = "vm_id"): void {
  checkString(vmId, {
    field,
    required: true,
    max: 63,
    pattern: DOMAIN_NAME_PATTERN,
    patternHint: ID_HINT,
  });
}

/**
 * The transports a migration destination may name. Not `ext` (its
 * `command` runs on the source) nor `unix` (a socket of the source itself).
 */
const MIGRATION_TRANSPORTS = new Set(["", "tls", "tcp", "ssh", "libssh", "libssh2"]);

/**
 * The URI parameters a migration destination may carry. The others run a
 * program on the source (`command`, `netcat`), pick its sockets or client
 * credentials (`socket`, `pkipath`, `name`), or weaken its checks of the
 * destination (`no_verify`, `tls_priority`, `known_hosts_verify`).
 */
const MIGRATION_PARAMS = new Set(["keyfile", "known_hosts", "sshauth", "mode", "no_tty", "proxy"]);

const URI_PARTS =
  /^([a-z][a-z0-9]*)(?:\+([a-z0-9]+))?:\/\/(?:([^@/]*)@)?(\[[^\]]*\]|[^:/]*)(?::[0-9]+)?\/[^?]*(?:\?(.*))?$/;

/**
 * Why `uri` may not be a migration destination, or undefined when it may.
 * The destination's URI is what that node reported, and the source's
 * libvirt acts on it: a node must not be able to make another run a
 * program, open something of its own, use other credentials or check less.
 * So: the qemu driver, a host, a network transport, harmless parameters.
 */
export function libvirtMigrationUriProblem(uri: string): string | undefined {
  if (!isLibvirtUri(uri)) return `not ${URI_HINT}`;
  const [, driver = "", transport = "", user = "", host = "", query] = URI_PARTS.exec(uri) ?? [];
  // Another driver, or none of a host, is opened on the source itself: `test:///<file>`
  // reads a file of the node's choosing (and quotes it in the error), `qemu:///session`
  // or `lxc:///` reach something local instead of the destination.
  if (driver !== "qemu") return `the ${driver} driver is not a migration destination (qemu is)`;
  if (!MIGRATION_TRANSPORTS.has(transport))
    return `the ${transport} transport is not allowed for a migration destination`;
  if (host === "") return "a migration destination names its host";
  if (user.startsWith("-") || host.startsWith("-")) return "a user or host may not start with '-'";
  for (const pair of query === undefined || query === "" ? [] : query.split("&")) {
    const name = pair.split("=", 1)[0] ?? "";
    if (!MIGRATION_PARAMS.has(name))
      return `the parameter ${name === "" ? "(empty)" : name} is not allowed in a migration destination`;
  }
  return undefined;
}

/** Throws INVALID_ARGUMENT naming `field` unless `uri` is a migration destination a source may connect to. */
export function checkMigrationUri(uri: string, field: string): void {
  checkLibvirtUri(uri, field);
  const problem = libvirtMigrationUriProblem(uri);
  if (problem !== undefined)
    throw new RpcError("INVALID_ARGUMENT", { message: `${field}: ${problem}` });
}

/** Throws INVALID_ARGUMENT naming `field` unless `uri` is a valid libvirt URI. */
export function checkLibvirtUri(uri: string, field: string): void {
  checkString(uri, {
    field,
    required: true,
    max: URI_MAX,
    pattern: LIBVIRT_URI_PATTERN,
    patternHint: URI_HINT,
  });
}
