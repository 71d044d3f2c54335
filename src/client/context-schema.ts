/**
 * The hvctl configuration file's shape, checked by hand: this runs on every
 * hvctl start, and a schema library's import alone cost more than the rest
 * of reading the file (about 60 ms of CPU). Unknown keys are refused, as
 * everywhere in our configuration; a failure names the path of the first
 * offending field.
 */

/** One credential: a client certificate and key, an API key (a file or the key itself), or a JWT from a file or printed by a command. */
export type ContextCredential =
  | { clientCert: string; clientKey: string }
  | { apiKeyFile: string }
  | { apiKey: string }
  | { tokenFile: string }
  | { tokenCommand: string[] };

/** One named context as written in the file. */
export interface ContextEntry {
  name: string;
  /** HOST:PORT of debvisor-rpcd. */
  server: string;
  /** CA that signs the server certificate: a file path (relative to this file) ... */
  ca?: string;
  /** ... or the PEM itself. */
  caData?: string;
  /** Name to verify the server certificate against, when it differs from the host in `server`. */
  tlsServerName?: string;
  /** Files are relative to this file; a token command runs without a shell. */
  credential: ContextCredential;
}

/** A parsed hvctl configuration file: named contexts, one of them current. */
export interface ContextFile {
  apiVersion: "debvisor.io/v1";
  kind: "HvctlConfig";
  currentContext?: string;
  contexts: ContextEntry[];
  /**
   * Where hvctl keeps the revoked server certificates it refuses, a list per
   * cluster CA (relative to this file); default
   * `$XDG_STATE_HOME/debvisor/revoked-servers.json`, else
   * `~/.local/state/debvisor/revoked-servers.json`.
   */
  revokedServersFile?: string;
}

/** Where and why a document is not a context file. */
export interface ContextFileProblem {
  readonly path: string;
  readonly message: string;
}

const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/;
const CREDENTIALS: readonly (readonly string[])[] = [
  ["clientCert", "clientKey"],
  ["apiKeyFile"],
  ["apiKey"],
  ["tokenFile"],
  ["tokenCommand"],
];

class Problem extends Error {
  constructor(
    readonly at: string,
    message: string,
  ) {
    super(message);
  }
}

function object(v: unknown, at: string, keys: readonly string[]): Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v))
    throw new Problem(at, "expected an object");
  for (const k of Object.keys(v))
    if (!keys.includes(k)) throw new Problem(at, `unrecognized key: "${k}"`);
  return v as Record<string, unknown>;
}

function text(
  o: Record<string, unknown>,
  key: string,
  at: string,
  min: number,
  max: number,
  optional = false,
): void {
  const v = o[key];
  const here = at === "" ? key : `${at}.${key}`;
  if (v === undefined && optional) return;
  if (typeof v !== "string") throw new Problem(here, "expected a string");
  if (v.length < min) throw new Problem(here, `at least ${min} character${min === 1 ? "" : "s"}`);
  if (v.length > max) throw new Problem(here, `at most ${max} characters`);
}

function credential(v: unknown, at: string): void {
  const o = object(v, at, CREDENTIALS.flat());
  const kind = CREDENTIALS.find(
    (keys) => keys.every((k) => k in o) && Object.keys(o).length === keys.length,
  );
  if (kind === undefined)
    throw new Problem(
      at,
      "exactly one of clientCert+clientKey, apiKeyFile, apiKey, tokenFile, tokenCommand",
    );
  if (kind[0] === "tokenCommand") {
    const cmd = o.tokenCommand;
    if (!Array.isArray(cmd) || cmd.length < 1 || cmd.length > 64)
      throw new Problem(`${at}.tokenCommand`, "a list of 1 to 64 strings");
    for (const [i, arg] of cmd.entries())
      if (typeof arg !== "string" || arg.length > 4096)
        throw new Problem(`${at}.tokenCommand.${i}`, "a string of at most 4096 characters");
  } else for (const k of kind) text(o, k, at, 1, k === "apiKey" ? 1024 : Number.MAX_SAFE_INTEGER);
}

function context(v: unknown, at: string): void {
  const o = object(v, at, ["name", "server", "ca", "caData", "tlsServerName", "credential"]);
  text(o, "name", at, 1, 128);
  text(o, "server", at, 1, Number.MAX_SAFE_INTEGER);
  if (!HOST_PORT.test(o.server as string)) throw new Problem(`${at}.server`, "must be HOST:PORT");
  text(o, "ca", at, 1, Number.MAX_SAFE_INTEGER, true);
  text(o, "caData", at, 1, Number.MAX_SAFE_INTEGER, true);
  text(o, "tlsServerName", at, 1, 253, true);
  credential(o.credential, `${at}.credential`);
}

/** Checks that `doc` is a context file; returns it typed, or the first problem found. */
export function checkContextFile(
  doc: unknown,
): { file: ContextFile } | { problem: ContextFileProblem } {
  try {
    const o = object(doc, "", [
      "apiVersion",
      "kind",
      "currentContext",
      "contexts",
      "revokedServersFile",
    ]);
    if (o.apiVersion !== "debvisor.io/v1")
      throw new Problem("apiVersion", 'must be "debvisor.io/v1"');
    if (o.kind !== "HvctlConfig") throw new Problem("kind", 'must be "HvctlConfig"');
    text(o, "currentContext", "", 0, Number.MAX_SAFE_INTEGER, true);
    if (!Array.isArray(o.contexts)) throw new Problem("contexts", "expected a list");
    if (o.contexts.length > 1000) throw new Problem("contexts", "at most 1000 contexts");
    for (const [i, c] of o.contexts.entries()) context(c, `contexts.${i}`);
    text(o, "revokedServersFile", "", 1, 4096, true);
    return { file: o as unknown as ContextFile };
  } catch (err) {
    if (err instanceof Problem) return { problem: { path: err.at, message: err.message } };
    throw err;
  }
}
