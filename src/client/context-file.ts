import { chmodSync, existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, isAbsolute, resolve } from "node:path";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import { z } from "zod";

const MAX_FILE_BYTES = 1024 * 1024;

const contextSchema = z.strictObject({
  name: z.string().min(1).max(128),
  /** HOST:PORT of debvisor-rpcd. */
  server: z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, "must be HOST:PORT"),
  /** CA that signs the server certificate: a file path (relative to this file) ... */
  ca: z.string().min(1).optional(),
  /** ... or the PEM itself. */
  caData: z.string().min(1).optional(),
  /** Name to verify the server certificate against, when it differs from the host in `server`. */
  tlsServerName: z.string().min(1).max(253).optional(),
  /** One credential: a client certificate and key, an API key, or a JWT (files relative to this file). */
  credential: z.union([
    z.strictObject({ clientCert: z.string().min(1), clientKey: z.string().min(1) }),
    z.strictObject({ apiKeyFile: z.string().min(1) }),
    z.strictObject({ tokenFile: z.string().min(1) }),
  ]),
});

/** The hvctl configuration file: named contexts, one of them current. */
export const contextFileSchema = z.strictObject({
  apiVersion: z.literal("debvisor.io/v1"),
  kind: z.literal("HvctlConfig"),
  currentContext: z.string().optional(),
  contexts: z.array(contextSchema).max(1000),
});

/** A parsed hvctl configuration file. */
export type ContextFile = z.infer<typeof contextFileSchema>;
/** One named context as written in the file. */
export type ContextEntry = z.infer<typeof contextSchema>;

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
}

/** A problem with the hvctl configuration; the message says which file and key. */
export class ContextFileError extends Error {
  override readonly name = "ContextFileError";
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
  const parsed = contextFileSchema.safeParse(doc);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    const at = first?.path.map(String).join(".") ?? "";
    throw new ContextFileError(
      `${path}: ${at === "" ? "" : `${at}: `}${first?.message ?? "invalid"}`,
    );
  }
  return parsed.data;
}

/** Picks a context (by name, else the current one) and reads its CA and credential files. */
export function resolveContext(path: string, name?: string): ResolvedContext {
  const file = readContextFile(path);
  const wanted = name ?? file.currentContext;
  const ctx =
    wanted === undefined ? file.contexts[0] : file.contexts.find((c) => c.name === wanted);
  if (ctx === undefined) {
    throw new ContextFileError(
      wanted === undefined ? `${path}: no contexts` : `${path}: no context named "${wanted}"`,
    );
  }
  const dir = dirname(resolve(path));
  const read = (p: string, what: string) => {
    const full = isAbsolute(p) ? p : resolve(dir, p);
    if (!existsSync(full))
      throw new ContextFileError(`${path}: context "${ctx.name}": ${what} not found: ${full}`);
    return readFileSync(full, "utf8");
  };
  const caPem = ctx.caData ?? (ctx.ca === undefined ? undefined : read(ctx.ca, "ca"));
  if (caPem === undefined)
    throw new ContextFileError(`${path}: context "${ctx.name}": ca or caData required`);
  const c = ctx.credential;
  const base = { name: ctx.name, server: ctx.server, caPem, tlsServerName: ctx.tlsServerName };
  if ("clientCert" in c) {
    return {
      ...base,
      certPem: read(c.clientCert, "credential.clientCert"),
      keyPem: read(c.clientKey, "credential.clientKey"),
    };
  }
  const bearer = (
    "apiKeyFile" in c
      ? read(c.apiKeyFile, "credential.apiKeyFile")
      : read(c.tokenFile, "credential.tokenFile")
  ).trim();
  return { ...base, bearer };
}

/** Writes a context file atomically with mode 0600. */
export function writeContextFile(path: string, file: ContextFile): void {
  const checked = contextFileSchema.parse(file);
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, stringifyYaml(checked), { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}
