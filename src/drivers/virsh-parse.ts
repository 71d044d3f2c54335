/**
 * Parsers of virsh's human output, run under `LC_ALL=C` so the words are
 * English. Each throws a {@link VirshParseError} on output it does not
 * understand rather than guessing; the driver turns that into BACKEND_FAILED.
 * Fixtures recorded from virsh 9.0 live in test/fixtures/virsh/.
 */
import type { DomainState } from "./hypervisor-driver.js";

/** Output virsh printed that a parser does not understand. */
export class VirshParseError extends Error {
  override readonly name = "VirshParseError";
}

/** `virsh list --all --name`: one domain name per line, then a blank line. */
export function parseNameList(stdout: string): string[] {
  return stdout
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "");
}

/** What `virsh dominfo` tells about one domain. */
export interface Dominfo {
  readonly name: string;
  readonly state: DomainState;
  readonly vcpus: number;
  /** "Max memory": what the domain may use, the figure placement must reserve. */
  readonly maxMemoryBytes: bigint;
  /** "Used memory": what it has now (its balloon target). */
  readonly usedMemoryBytes: bigint;
  readonly persistent: boolean;
}

/**
 * virsh's state words (`virshDomainStateToString`) to ours. A domain shutting
 * down still runs; `pmsuspended` (suspended by the guest) does not run but
 * keeps its memory, like paused.
 */
const STATES: Readonly<Record<string, DomainState>> = {
  running: "running",
  idle: "running",
  blocked: "running",
  "in shutdown": "running",
  paused: "paused",
  pmsuspended: "paused",
  "shut off": "stopped",
  crashed: "crashed",
};

/** Maps one of virsh's state words; throws on a word it does not know ("no state"). */
export function parseState(word: string): DomainState {
  const state = STATES[word.trim()];
  if (state === undefined) throw new VirshParseError(`unknown domain state "${word.trim()}"`);
  return state;
}

/** `virsh domstate DOMAIN`: the state word and a blank line. */
export function parseDomstate(stdout: string): DomainState {
  const first = stdout.split("\n").find((l) => l.trim() !== "");
  if (first === undefined) throw new VirshParseError("domstate printed nothing");
  return parseState(first);
}

/** `Key:   value` lines of dominfo and domjobinfo, keys as printed. */
function fields(stdout: string): Map<string, string> {
  const map = new Map<string, string>();
  for (const line of stdout.split("\n")) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    map.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  return map;
}

function required(map: Map<string, string>, key: string): string {
  const value = map.get(key);
  if (value === undefined) throw new VirshParseError(`no "${key}" line`);
  return value;
}

function kibToBytes(value: string, key: string): bigint {
  const m = /^(\d{1,20}) KiB$/.exec(value);
  if (m === null) throw new VirshParseError(`"${key}" is not a KiB figure`);
  return BigInt(m[1] as string) * 1024n;
}

/** `virsh dominfo DOMAIN`. */
export function parseDominfo(stdout: string): Dominfo {
  const map = fields(stdout);
  const vcpus = Number(required(map, "CPU(s)"));
  if (!Number.isInteger(vcpus) || vcpus < 1) throw new VirshParseError('"CPU(s)" is not a count');
  const persistent = required(map, "Persistent");
  if (persistent !== "yes" && persistent !== "no") {
    throw new VirshParseError('"Persistent" is neither yes nor no');
  }
  return {
    name: required(map, "Name"),
    state: parseState(required(map, "State")),
    vcpus,
    maxMemoryBytes: kibToBytes(required(map, "Max memory"), "Max memory"),
    usedMemoryBytes: kibToBytes(required(map, "Used memory"), "Used memory"),
    persistent: persistent === "yes",
  };
}

/**
 * One stderr line of `virsh migrate --verbose`: the percentage, or undefined
 * for other lines. virsh writes `\rMigration: [ 45 %]` (libvirt up to 9.x,
 * `[%3d %%]`) or `\rMigration: [45.50 %]` (later, `[%5.2f %%]`); an error
 * after a progress report follows on the same line.
 */
export function parseMigrationProgress(line: string): number | undefined {
  const m = /Migration: \[\s*(\d{1,3}(?:\.\d{1,2})?) %\]/.exec(line);
  if (m === null) return undefined;
  const percent = Number(m[1]);
  return percent >= 0 && percent <= 100 ? percent : undefined;
}

/** The figures of `virsh domjobinfo DOMAIN` the driver uses. */
export interface JobInfo {
  /** "Unbounded", "Bounded", "None", ... as printed. */
  readonly jobType: string;
  readonly dataProcessedBytes?: bigint;
  readonly dataRemainingBytes?: bigint;
  readonly dataTotalBytes?: bigint;
  readonly expectedDowntimeMs?: number;
}

const UNITS: Readonly<Record<string, number>> = {
  B: 1,
  KiB: 1024,
  MiB: 1024 ** 2,
  GiB: 1024 ** 3,
  TiB: 1024 ** 4,
  PiB: 1024 ** 5,
  EiB: 1024 ** 6,
};

/** virsh's `vshPrettyCapacity` figures (`115.508 MiB`), to bytes (to a rounding of 0.001 unit). */
function prettyBytes(value: string | undefined): bigint | undefined {
  if (value === undefined) return undefined;
  const m = /^(\d{1,20}(?:\.\d{1,6})?) (B|KiB|MiB|GiB|TiB|PiB|EiB)$/.exec(value);
  if (m === null) throw new VirshParseError(`"${value}" is not a size`);
  const [whole = "0", frac = ""] = (m[1] as string).split(".");
  const unit = BigInt(UNITS[m[2] as string] as number);
  const scale = 10n ** BigInt(frac.length);
  return ((BigInt(whole) * scale + BigInt(frac === "" ? "0" : frac)) * unit) / scale;
}

/** `virsh domjobinfo DOMAIN` while a job runs (or `Job type: None` when none does). */
export function parseDomjobinfo(stdout: string): JobInfo {
  const map = fields(stdout);
  const downtime = map.get("Expected downtime");
  const downtimeMatch = downtime === undefined ? null : /^(\d{1,12})\s+ms$/.exec(downtime);
  const info: {
    jobType: string;
    dataProcessedBytes?: bigint;
    dataRemainingBytes?: bigint;
    dataTotalBytes?: bigint;
    expectedDowntimeMs?: number;
  } = { jobType: required(map, "Job type") };
  const processed = prettyBytes(map.get("Data processed"));
  const remaining = prettyBytes(map.get("Data remaining"));
  const total = prettyBytes(map.get("Data total"));
  if (processed !== undefined) info.dataProcessedBytes = processed;
  if (remaining !== undefined) info.dataRemainingBytes = remaining;
  if (total !== undefined) info.dataTotalBytes = total;
  if (downtimeMatch !== null) info.expectedDowntimeMs = Number(downtimeMatch[1]);
  return info;
}

/** A connection to libvirt broken: while opening it, or during a call. */
const CONNECTION_LOST =
  /End of file while reading data|Cannot recv data|Cannot write data|client socket is closed|Broken pipe/i;
/** A connection to libvirt that never opened (virsh says so first, then why). */
const CONNECT_FAILED = /failed to connect to the hypervisor/i;

/**
 * The connection to libvirt lost during a call (libvirtd restarting or
 * killed): unlike one that never opened (an ssh or socket peer closing as
 * virsh connects gives the same "Cannot recv data" after "failed to connect
 * to the hypervisor"), the command may have been carried out.
 */
export function lostMidCall(stderr: string): boolean {
  return CONNECTION_LOST.test(stderr) && !CONNECT_FAILED.test(stderr);
}

/** What a failed virsh command's stderr says went wrong. */
export type VirshFailure = "not-found" | "unavailable" | "unsupported" | "other";

/**
 * Classifies the `error:` lines of a failed command. The patterns are the
 * messages of libvirt 9 and its predecessors: "failed to get domain 'x'"
 * (virsh's lookup), "Domain not found" / "no domain with matching name"
 * (the library's VIR_ERR_NO_DOMAIN), and the connection errors.
 */
export function classifyVirshError(stderr: string): VirshFailure {
  if (/failed to get domain|Domain not found|no domain with matching/i.test(stderr)) {
    return "not-found";
  }
  if (
    /Failed to connect socket|unable to connect to server|Connection refused|no connection driver available/i.test(
      stderr,
    ) ||
    CONNECT_FAILED.test(stderr) ||
    CONNECTION_LOST.test(stderr)
  ) {
    return "unavailable";
  }
  if (/not supported by the connection driver|argument unsupported|not supported/i.test(stderr)) {
    return "unsupported";
  }
  return "other";
}

/**
 * The RBD images among a domain's disks, from `virsh dumpxml`: each
 * `<source protocol='rbd' name='pool/image'/>` (libvirt writes `protocol`
 * before `name`), as pool and image name.
 */
export function parseRbdDiskSources(xml: string): { pool: string; name: string }[] {
  const out: { pool: string; name: string }[] = [];
  for (const m of xml.matchAll(/<source\s+protocol=['"]rbd['"]\s+name=['"]([^'"]+)['"]/g)) {
    const full = m[1] as string;
    const slash = full.indexOf("/");
    if (slash <= 0 || slash === full.length - 1)
      throw new Error(`unexpected rbd disk source: ${full.slice(0, 200)}`);
    out.push({ pool: full.slice(0, slash), name: full.slice(slash + 1) });
  }
  return out;
}

/**
 * `virsh metadata --domain D --uri NS`: the domain's element in DebVisor's
 * namespace, which libvirt prints without its prefix (`<vm ha="true"/>`).
 * HA only when that element is `vm` and its `ha` attribute is exactly
 * `true` (what libvirt-domain-xml.ts writes); another element or value
 * is not HA. Throws on output that holds no element at all.
 */
export function parseHaMetadata(stdout: string): boolean {
  const m =
    /^\s*<(?:[A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)((?:\s+[^\s=>/]+\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*\/?>/.exec(
      stdout,
    );
  if (m === null) throw new VirshParseError("metadata printed no element");
  if (m[1] !== "vm") return false;
  for (const a of (m[2] as string).matchAll(/\s+([^\s=>/]+)\s*=\s*(?:"([^"]*)"|'([^']*)')/g))
    if (a[1] === "ha") return (a[2] ?? a[3]) === "true";
  return false;
}
