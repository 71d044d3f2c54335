/** Options of {@link createEtcdStore}. */
export interface EtcdStoreOptions {
  /** etcd client URLs with an explicit port, `http://host:port` or `https://host:port`; one scheme for all. */
  readonly endpoints: readonly string[];
  /** Namespace of every key this store touches (default "/debvisor/"); printable ASCII, may be empty. */
  readonly prefix?: string;
  /** TLS to etcd (endpoints must be https): the CA of etcd's certificate, optionally a client certificate and key. */
  readonly tls?: { readonly caPem: string; readonly certPem?: string; readonly keyPem?: string };
  /** How long a watch may stay disconnected while it reconnects before it ends with STORE_UNAVAILABLE (default 5000). */
  readonly dialTimeoutMs?: number;
  /** Deadline of one store call, retries of reads included (default 10000). */
  readonly callTimeoutMs?: number;
}

/** {@link EtcdStoreOptions} validated and fully defaulted by {@link resolveOptions}; frozen. */
export interface EtcdStoreConfig {
  readonly endpoints: readonly string[];
  readonly prefix: string;
  readonly tls: EtcdStoreOptions["tls"];
  readonly dialTimeoutMs: number;
  readonly callTimeoutMs: number;
}

const ENDPOINT = /^(https?):\/\/([^/?#@\s]+):(\d{1,5})\/?$/;
const PRINTABLE = /^[\x21-\x7e]*$/;

/** Validates and defaults the options once, into a frozen config; throws TypeError on misuse. */
export function resolveOptions(options: EtcdStoreOptions): EtcdStoreConfig {
  if (!Array.isArray(options?.endpoints) || options.endpoints.length === 0) {
    throw new TypeError("etcd store: endpoints must list at least one URL");
  }
  const endpoints = options.endpoints.map((e: unknown) => {
    const m = typeof e === "string" ? ENDPOINT.exec(e) : null;
    if (m === null || Number(m[3]) < 1 || Number(m[3]) > 65535) {
      throw new TypeError(`etcd store: endpoint must be http(s)://host:port: ${String(e)}`);
    }
    return `${m[1]}://${m[2]}:${m[3]}`;
  });
  const https = endpoints.filter((e) => e.startsWith("https:")).length;
  if (https !== 0 && https !== endpoints.length) {
    throw new TypeError("etcd store: endpoints must all be http or all be https");
  }
  const tls = options.tls;
  if (tls !== undefined) {
    if (https === 0) throw new TypeError("etcd store: tls needs https endpoints");
    if (typeof tls.caPem !== "string" || tls.caPem === "") {
      throw new TypeError("etcd store: tls.caPem is required");
    }
    if ((tls.certPem === undefined) !== (tls.keyPem === undefined)) {
      throw new TypeError("etcd store: tls.certPem and tls.keyPem go together");
    }
  }
  const prefix = options.prefix ?? "/debvisor/";
  if (typeof prefix !== "string" || prefix.length > 256 || !PRINTABLE.test(prefix)) {
    throw new TypeError("etcd store: prefix must be at most 256 printable ASCII characters");
  }
  return Object.freeze({
    endpoints: Object.freeze(endpoints),
    prefix,
    tls:
      tls === undefined
        ? undefined
        : Object.freeze({ caPem: tls.caPem, certPem: tls.certPem, keyPem: tls.keyPem }),
    dialTimeoutMs: timeout("dialTimeoutMs", options.dialTimeoutMs, 5000),
    callTimeoutMs: timeout("callTimeoutMs", options.callTimeoutMs, 10_000),
  });
}

function timeout(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1 || value > 2 ** 31 - 1) {
    throw new TypeError(`etcd store: ${name} must be a positive integer of milliseconds`);
  }
  return value;
}
