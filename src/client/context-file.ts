import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from "node:fs";
import { dirname, isAbsolute, resolve } from "node:path";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import {
  type ContextEntry,
  type ContextFile,
  type ContextFileProblem,
  checkContextFile,
} from "./context-schema.js";
import { finishFileSet } from "./file-set.js";

const MAX_FILE_BYTES = 1024 * 1024;
/** How long a credential.tokenCommand may run, and how much it may print. */
const TOKEN_COMMAND_TIMEOUT_MS = 30_000;
const TOKEN_COMMAND_MAX_BYTES = 64 * 1024;

/** A context with its files read: everything needed to connect. */
export interface ResolvedContext {
  readonly name: string;
  readonly server: string;
  readonly caPem: string;
  /** Client certificate and key, for mTLS contexts. */
  readonly certPem?: string;
  readonly keyPem?: string;
  /** Bearer token (API key or JWT), for token contexts. */
  readonly bearer?: string;
  readonly tlsServerName: string | undefined;
  /** Accept any server certificate. Never from the file: only an explicit flag sets it. */
  readonly insecureSkipTlsVerify?: boolean;
}

/** Options of {@link resolveContext}. */
export interface ResolveOptions {
  /** Use this bearer token instead of the context's credential (whose files are then not read). */
  readonly bearer?: string;
  /** Accept a context without a CA (only together with skipping server verification). */
  readonly allowMissingCa?: boolean;
}

/** A problem with the hvctl configuration; the message says which file and key. */
export class ContextFileError extends Error {
  override readonly name = "ContextFileError";
  constructor(
    message: string,
    /** For a file about to be written: the offending field, like `contexts.0.server`. */
    readonly problem?: ContextFileProblem,
  ) {
    super(message);
  }
}

/** Reads and validates a context file. */
export function readContextFile(path: string): ContextFile {
  if (!existsSync(path)) throw new ContextFileError(`${path}: file not found`);
  const text = readFileSync(path, "utf8");
  if (text.length > MAX_FILE_BYTES) throw new ContextFileError(`${path}: larger than 1 MiB`);
  let doc: unknown;
  try {
    doc = parseYaml(text, { maxAliasCount: 100 });
  } catch (err) {
    throw new ContextFileError(`${path}: not valid YAML: ${(err as Error).message}`);
  }
  const checked = checkContextFile(doc);
  if ("problem" in checked) {
    const { path: at, message } = checked.problem;
    throw new ContextFileError(`${path}: ${at === "" ? "" : `${at}: `}${message}`);
  }
  return checked.file;
}

/** Picks a context: by name, else the file's current one, else the first. */
export function selectContext(
  path: string,
  name?: string,
): { file: ContextFile; entry: ContextEntry } {
  const file = readContextFile(path);
  const wanted = name ?? file.currentContext;
  const entry =
    wanted === undefined ? file.contexts[0] : file.contexts.find((c) => c.name === wanted);
  if (entry === undefined) {
    throw new ContextFileError(
      wanted === undefined ? `${path}: no contexts` : `${path}: no context named "${wanted}"`,
    );
  }
  return { file, entry };
}

/** A path from the context file: absolute as is, otherwise relative to the file's folder. */
export function contextFilePath(configPath: string, p: string): string {
  return isAbsolute(p) ? p : resolve(dirname(resolve(configPath)), p);
}

/** Picks a context (by name, else the current one) and reads its CA and credential. */
export function resolveContext(
  path: string,
  name?: string,
  options: ResolveOptions = {},
): ResolvedContext {
  const { entry: ctx } = selectContext(path, name);
  const where = `${path}: context "${ctx.name}"`;
  const read = (p: string, what: string) => {
    const full = contextFilePath(path, p);
    if (!existsSync(full)) throw new ContextFileError(`${where}: ${what} not found: ${full}`);
    return readFileSync(full, "utf8");
  };
  const caPem = ctx.caData ?? (ctx.ca === undefined ? undefined : read(ctx.ca, "ca"));
  if (caPem === undefined && options.allowMissingCa !== true)
    throw new ContextFileError(`${where}: ca or caData required`);
  const base = {
    name: ctx.name,
    server: ctx.server,
    caPem: caPem ?? "",
    tlsServerName: ctx.tlsServerName,
  };
  if (options.bearer !== undefined) return { ...base, bearer: options.bearer };
  const c = ctx.credential;
  if ("clientCert" in c) {
    // A key and certificate `hvctl cert renew` was moving in when it stopped: moved in first.
    finishFileSet(contextFilePath(path, c.clientKey));
    return {
      ...base,
      certPem: read(c.clientCert, "credential.clientCert"),
      keyPem: read(c.clientKey, "credential.clientKey"),
    };
  }
  let bearer: string;
  if ("apiKey" in c) bearer = c.apiKey;
  else if ("apiKeyFile" in c) bearer = read(c.apiKeyFile, "credential.apiKeyFile");
  else if ("tokenFile" in c) bearer = read(c.tokenFile, "credential.tokenFile");
  else bearer = runTokenCommand(c.tokenCommand, where);
  bearer = bearer.trim();
  if (bearer === "") throw new ContextFileError(`${where}: the credential is empty`);
  const problem = bearerProblem(bearer);
  if (problem !== undefined) throw new ContextFileError(`${where}: the credential ${problem}`);
  return { ...base, bearer };
}

/**
 * Why `token` cannot be sent as a bearer token (a character outside
 * printable ASCII: a header cannot carry it, and the server takes no
 * other), without quoting the token: grpc-js's own error for it shows the
 * whole header, secret and all.
 */
export function bearerProblem(token: string): string | undefined {
  const at = token.search(/[^\x21-\x7e]/);
  if (at < 0) return undefined;
  const char = `U+${(token.codePointAt(at) ?? 0).toString(16).toUpperCase().padStart(4, "0")}`;
  return `holds ${char} at character ${at + 1}, which a token cannot hold (the token is not shown)`;
}

/** Runs credential.tokenCommand (no shell, bounded in time and output) and returns what it prints. */
function runTokenCommand(argv: readonly string[], where: string): string {
  const [program, ...args] = argv;
  try {
    return execFileSync(program as string, args, {
      encoding: "utf8",
      timeout: TOKEN_COMMAND_TIMEOUT_MS,
      maxBuffer: TOKEN_COMMAND_MAX_BYTES,
      stdio: ["ignore", "pipe", "pipe"],
      shell: false,
    });
  } catch (err) {
    const e = err as {
      code?: string;
      status?: number | null;
      signal?: string | null;
      stderr?: string;
    };
    const why =
      e.code === "ENOENT"
        ? "not found"
        : e.signal === "SIGTERM"
          ? `did not finish within ${TOKEN_COMMAND_TIMEOUT_MS / 1000}s`
          : e.code === "ENOBUFS"
            ? "printed too much"
            : `exited ${e.status ?? e.signal}${e.stderr ? `: ${e.stderr.trim().split("\n")[0]?.slice(0, 200)}` : ""}`;
    throw new ContextFileError(`${where}: credential.tokenCommand ${program}: ${why}`);
  }
}

/**
 * Writes a context file atomically with mode 0600: a temporary file beside
 * it, fsynced, then renamed over it, so a reader sees the old or the new file
 * and never half of one. Creates the folder (0700) when missing.
 */
export function writeContextFile(path: string, file: ContextFile): void {
  const result = checkContextFile(file);
  if ("problem" in result)
    throw new ContextFileError(
      `${path}: ${result.problem.path}: ${result.problem.message}`,
      result.problem,
    );
  const checked = result.file;
  mkdirSync(dirname(resolve(path)), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  const fd = openSync(tmp, "wx", 0o600);
  try {
    writeSync(fd, stringifyYaml(checked));
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  closeSync(fd);
  renameSync(tmp, path);
}
