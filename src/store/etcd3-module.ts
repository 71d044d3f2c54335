import { createRequire } from "node:module";

type Etcd3Module = typeof import("etcd3");

let loaded: Etcd3Module | undefined;

/**
 * The etcd3 client library, loaded the first time an etcd store needs it.
 * Loading it costs about 14 MiB and 160 ms (it parses etcd's protos for
 * its own gRPC client), which a daemon on the default SQLite store never
 * needs to pay. Types come from `import type`, which loads nothing.
 */
export function etcd3(): Etcd3Module {
  loaded ??= createRequire(import.meta.url)("etcd3") as Etcd3Module;
  return loaded;
}
