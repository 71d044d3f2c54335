import type { EventEmitter } from "node:events";
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { DescService } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import * as grpc from "@grpc/grpc-js";
import {
  bearerProblem,
  type CallOptions,
  type ContextEntry,
  ContextFileError,
  caFingerprint,
  contextFilePath,
  createServiceClient,
  openChannel,
  type ResolvedContext,
  readContextFile,
  resolveContext,
  type ServiceClient,
  selectContext,
} from "../client/index.js";
import { CallError, type ConnectionFacts, UsageError } from "./cli-errors.js";
import { parseDuration } from "./duration.js";
import { createStyle, type OutputFormat, type Style, serialize, terminalSafe } from "./output.js";
import { openServerCheck, revokedServersPath, type ServerCheck } from "./revoked-server-check.js";

/** Where hvctl reads and writes; the binary passes the process's, tests their own. */
export interface ProgramIo {
  readonly out: (text: string) => void;
  readonly err: (text: string) => void;
  readonly env: NodeJS.ProcessEnv;
  /** Whether stdout / stderr / stdin are terminals (default: none is). */
  readonly tty?: { readonly stdout?: boolean; readonly stderr?: boolean; readonly stdin?: boolean };
  /** Keyboard input for questions on a terminal (default: none). */
  readonly stdin?: NodeJS.ReadableStream & { setRawMode?: (raw: boolean) => unknown };
  /** Where SIGINT arrives (default: the process). */
  readonly signals?: EventEmitter;
  /** Width of the terminal stderr is on, for progress bars (default 80). */
  readonly columns?: number;
}

/** Global options every command sees, wherever on the command line they were given. */
export interface GlobalOptions {
  config?: string;
  context?: string;
  server?: string;
  tokenFile?: string;
  insecureSkipTlsVerify?: boolean;
  output?: OutputFormat;
  timeout?: string;
}

/** What a command needs: where to write, how to format, and clients for the services. */
export interface CliContext {
  readonly io: ProgramIo;
  readonly out: (text: string) => void;
  /** Notes for people (stderr): never part of what scripts parse. */
  readonly err: (text: string) => void;
  readonly format: OutputFormat;
  /** True for `-o wide`. */
  readonly wide: boolean;
  /** Colours, only when stdout is a terminal and NO_COLOR is unset. */
  readonly style: Style;
  /** The configuration file in effect (--config, $DEBVISOR_CONFIG or the default). */
  readonly configPath: string;
  /** The global options as given. */
  readonly options: Readonly<GlobalOptions>;
  /**
   * A client for a service over the context's channel (opened on first use).
   * Unary calls get --timeout unless they pass their own; failures are CallErrors.
   */
  client<S extends GenService<GenServiceMethods>>(service: S): ServiceClient<S>;
  /** The resolved context: server, CA and credential after flags and environment. */
  connection(): ResolvedContext;
  /** The selected context as written in the file (--context, $DEBVISOR_CONTEXT, current). */
  contextEntry(): ContextEntry;
  /** Per-call timeout in milliseconds (--timeout). */
  readonly timeoutMs: number;
  /** Prints `data` as JSON or YAML for -o json|yaml, else what `human` renders. */
  print(data: unknown, human: () => string): void;
  /** Sets the exit code for a command that answered but says no (can-i, audit verify). */
  setExitCode(code: number): void;
  readonly exitCode: () => number;
  /**
   * The check of a server against the revoked server certificates kept for
   * the cluster whose CA has fingerprint `scope` (`sha256:hex`), for a
   * channel a command opens itself (cert enroll); `client` channels have
   * theirs already.
   */
  serverCheck(scope: string, server: string): ServerCheck;
  /**
   * A server certificate this command revoked (`cert revoke`): this hvctl
   * refuses it from the command's end, not only from its next list.
   */
  revokedServer(serial: string): void;
  /** What the failure explainer may use: the server, the context, the credential's kind. */
  facts(): ConnectionFacts;
  /**
   * Takes the cluster's revoked server certificates again on the channel
   * `client` opened, when its kept list is due and the channel is
   * connected (bounded by {@link REFRESH_TIMEOUT_MS}; never fails), then
   * closes the channel.
   */
  close(): Promise<void>;
}

/** How long the refresh of the revoked server certificates after a command may take. */
export const REFRESH_TIMEOUT_MS = 5_000;

/** The config file path: --config, then DEBVISOR_CONFIG, then ~/.config/debvisor/hvctl.yaml. */
export function configPath(opts: GlobalOptions, env: NodeJS.ProcessEnv): string {
  return (
    opts.config ??
    nonEmpty(env.DEBVISOR_CONFIG) ??
    join(homedir(), ".config", "debvisor", "hvctl.yaml")
  );
}

const nonEmpty = (v: string | undefined) => (v === undefined || v === "" ? undefined : v);
const SERVER = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/;

/**
 * The connection in effect. Precedence, highest first: flags (--context,
 * --server, --token-file), then DEBVISOR_CONTEXT, DEBVISOR_SERVER,
 * DEBVISOR_TOKEN, then the file's current context.
 */
export function resolveConnection(
  opts: GlobalOptions,
  env: NodeJS.ProcessEnv,
): ResolvedContext & { readonly credentialFrom: string } {
  const path = configPath(opts, env);
  if (!existsSync(path)) throw missingConfig(path);
  let bearer = nonEmpty(env.DEBVISOR_TOKEN);
  let credentialFrom = bearer === undefined ? "" : "$DEBVISOR_TOKEN";
  if (opts.tokenFile !== undefined) {
    credentialFrom = `--token-file ${opts.tokenFile}`;
    if (!existsSync(opts.tokenFile))
      throw new UsageError(`--token-file: file not found: ${opts.tokenFile}`);
    bearer = readFileSync(opts.tokenFile, "utf8").trim();
    if (bearer === "") throw new UsageError(`--token-file: ${opts.tokenFile} is empty`);
  }
  const problem = bearer === undefined ? undefined : bearerProblem(bearer);
  if (problem !== undefined) throw new UsageError(`${credentialFrom}: the token ${problem}`);
  const ctx = resolveContext(path, opts.context ?? nonEmpty(env.DEBVISOR_CONTEXT), {
    ...(bearer === undefined ? {} : { bearer }),
    allowMissingCa: opts.insecureSkipTlsVerify === true,
  });
  const server = opts.server ?? nonEmpty(env.DEBVISOR_SERVER) ?? ctx.server;
  if (!SERVER.test(server))
    throw new UsageError(
      `server address "${server}": expected HOST:PORT (from ${opts.server !== undefined ? "--server" : nonEmpty(env.DEBVISOR_SERVER) !== undefined ? "$DEBVISOR_SERVER" : "the context"})`,
    );
  return {
    ...ctx,
    server,
    insecureSkipTlsVerify: opts.insecureSkipTlsVerify === true,
    credentialFrom: credentialFrom || `context "${ctx.name}"`,
  };
}

/** The error for a configuration file that does not exist, saying how to make one. */
export function missingConfig(path: string): ContextFileError {
  return new ContextFileError(
    `${path}: file not found; create a context with: hvctl config set-context NAME --server HOST:PORT --ca CA.pem --api-key-file FILE (or --client-cert and --client-key, --token-file, --token-command)`,
  );
}

/** Builds the context lazily: commands that need no server (version, config) never connect. */
export function createCliContext(opts: GlobalOptions, io: ProgramIo): CliContext {
  let channel: grpc.Client | undefined;
  /** The check of `channel`'s server; undefined when its certificate is not checked at all. */
  let channelCheck: ServerCheck | undefined;
  const checks: ServerCheck[] = [];
  let resolved: ReturnType<typeof resolveConnection> | undefined;
  let exitCode = 0;
  const timeoutMs = parseDuration("--timeout", opts.timeout ?? "30s");
  const format = opts.output ?? "table";
  const connection = () => {
    resolved ??= resolveConnection(opts, io.env);
    return resolved;
  };
  const style = createStyle(io.tty?.stdout === true, io.env);
  // Text output never carries a control character from the server; JSON and YAML escape their own.
  const text =
    format === "json" || format === "yaml"
      ? undefined
      : { keepLines: true, keepColours: style.good("x") !== "x" };
  const safe = (write: (s: string) => void) => (s: string) =>
    write(text === undefined ? s : terminalSafe(s, text));
  const err = (s: string) => io.err(terminalSafe(s, { keepLines: true, keepColours: true }));
  /** A call was refused its credential: the list is not taken (it would count another failure). */
  let unauthenticated = false;
  const serverCheck = (scope: string, server: string) => {
    const check = openServerCheck({ path: keptListPath(opts, io.env), scope, server, err });
    checks.push(check);
    return check;
  };
  return {
    io,
    out: safe(io.out),
    err,
    format,
    wide: format === "wide",
    style,
    configPath: configPath(opts, io.env),
    options: opts,
    timeoutMs,
    setExitCode: (code) => {
      exitCode = code;
    },
    exitCode: () => exitCode,
    print(data, human) {
      const shown =
        text === undefined
          ? serialize(data, format as "json" | "yaml")
          : terminalSafe(human(), text);
      // Every output ends its last line: a shell prompt or a spinner drawn after it erases an unended one.
      io.out(shown === "" || shown.endsWith("\n") ? shown : `${shown}\n`);
    },
    connection,
    contextEntry: () =>
      selectContext(configPath(opts, io.env), opts.context ?? nonEmpty(io.env.DEBVISOR_CONTEXT))
        .entry,
    client(service) {
      if (channel === undefined) {
        const conn = connection();
        const scope = checkedScope(conn);
        channelCheck = scope === undefined ? undefined : serverCheck(scope, conn.server);
        channel = openChannel(conn, {}, channelCheck?.verify);
      }
      return annotate(service, createServiceClient(service, channel), timeoutMs, (e) => {
        if (e.code === grpc.status.UNAUTHENTICATED) unauthenticated = true;
      });
    },
    serverCheck,
    revokedServer(serial) {
      channelCheck?.revokedHere(serial);
    },
    facts() {
      const refused = checks.map((c) => c.refused()).find((s) => s !== undefined);
      const revoked = refused === undefined ? {} : { revokedServer: refused };
      if (resolved === undefined) return revoked;
      return {
        server: resolved.server,
        context: resolved.name,
        credentialFrom: resolved.credentialFrom,
        credential: resolved.certPem !== undefined ? "mtls" : "token",
        ...(resolved.certPem === undefined ? {} : { certPem: resolved.certPem }),
        ...(resolved.caPem === "" ? {} : { caPem: resolved.caPem }),
        ...revoked,
      };
    },
    async close() {
      const ch = channel;
      try {
        if (ch !== undefined && !unauthenticated && channelCheck?.due() === true && connected(ch))
          await channelCheck.refresh(() =>
            revokedServerSerials(ch, Math.min(timeoutMs, REFRESH_TIMEOUT_MS)),
          );
      } finally {
        ch?.close();
      }
    },
  };
}

/**
 * The cluster whose kept list checks `conn`'s server: its CA's fingerprint;
 * undefined when the server's certificate is not verified at all
 * (--insecure-skip-tls-verify: a list from such a server would be anyone's).
 */
function checkedScope(conn: ResolvedContext): string | undefined {
  if (conn.insecureSkipTlsVerify === true || conn.caPem === "") return undefined;
  try {
    return caFingerprint(conn.caPem);
  } catch {
    // Not a certificate: the handshake fails on it anyway.
    return undefined;
  }
}

/** The kept list's file: the configuration's `revokedServersFile`, else the default. */
function keptListPath(opts: GlobalOptions, env: NodeJS.ProcessEnv): string {
  const config = configPath(opts, env);
  let configured: string | undefined;
  try {
    const file = existsSync(config) ? readContextFile(config).revokedServersFile : undefined;
    if (file !== undefined) configured = contextFilePath(config, file);
  } catch {
    // A configuration that does not read is the command's own error, if it needs one.
  }
  return revokedServersPath(configured, env, homedir());
}

/** Whether `channel` holds a connection now (a refresh then costs one round trip, no connect). */
function connected(channel: grpc.Client): boolean {
  return channel.getChannel().getConnectivityState(false) === grpc.connectivityState.READY;
}

/** The serials ListRevokedServerCertificates answers on `channel` (its protos loaded only now). */
async function revokedServerSerials(
  channel: grpc.Client,
  timeoutMs: number,
): Promise<readonly string[]> {
  const { EnrollmentService } = await import("../gen/debvisor/v1/pki_pb.js");
  const r = await createServiceClient(EnrollmentService, channel).listRevokedServerCertificates(
    {},
    { timeoutMs },
  );
  return r.serials;
}

/**
 * Wraps a service client so unary calls carry the default timeout and every
 * failure is a CallError naming its method (for "you need <permission>").
 */
/** Tries of a call refused by a rate limit (refused before it ran, so any call may be retried). */
const RATE_LIMIT_ATTEMPTS = 5;

/**
 * How long to wait before trying a call again that a rate limit refused:
 * the server's retry-after plus a little jitter, if it is short (at most
 * 2 s); undefined for any other error.
 */
function rateLimitWait(err: CallError): number | undefined {
  if (err.trailer("debvisor-error-reason") !== "RATE_LIMITED") return undefined;
  const after = Number(err.trailer("retry-after-ms"));
  if (!Number.isFinite(after) || after < 0 || after > 2000) return undefined;
  return after + Math.floor(Math.random() * 50);
}

function annotate<S extends GenService<GenServiceMethods>>(
  service: S,
  client: ServiceClient<S>,
  timeoutMs: number,
  failed: (err: CallError) => void,
): ServiceClient<S> {
  const desc = service as unknown as DescService;
  const raw = client as unknown as Record<string, (req: unknown, o?: CallOptions) => unknown>;
  const out: Record<string, unknown> = {};
  for (const m of desc.methods) {
    const path = `/${desc.typeName}/${m.name}`;
    const fn = raw[m.localName];
    if (fn === undefined) continue;
    if (m.methodKind === "unary") {
      out[m.localName] = async (req: unknown, o: CallOptions = {}) => {
        for (let attempt = 1; ; attempt++) {
          try {
            return await (fn(req, { timeoutMs, ...o }) as Promise<unknown>);
          } catch (e) {
            const err = new CallError(path, e as grpc.ServiceError);
            const wait = rateLimitWait(err);
            if (wait === undefined || attempt >= RATE_LIMIT_ATTEMPTS) {
              failed(err);
              throw err;
            }
            await sleep(wait);
          }
        }
      };
    } else {
      out[m.localName] = (req: unknown, o: CallOptions = {}) =>
        rethrowing(fn(req, o) as AsyncIterable<unknown>, path, failed);
    }
  }
  return out as ServiceClient<S>;
}

async function* rethrowing<T>(
  stream: AsyncIterable<T>,
  path: string,
  failed: (err: CallError) => void,
): AsyncIterable<T> {
  try {
    yield* stream;
  } catch (e) {
    const err = new CallError(path, e as grpc.ServiceError);
    failed(err);
    throw err;
  }
}
