// The server layer: the debvisor-rpcd daemon. Configuration, the grpc-js
// adapter, TLS, health and reflection, metrics, systemd and dev mode.

export type { ClusterEvents } from "./cluster-events.js";
export { startClusterEvents } from "./cluster-events.js";
export { createClusterMetrics } from "./cluster-metrics.js";
export type { ConfigSources } from "./config-loader.js";
export {
  ConfigError,
  DEFAULT_CONFIG_PATH,
  ENV_KEYS,
  loadConfig,
  parseConfig,
} from "./config-loader.js";
export type { Config } from "./config-schema.js";
export { configSchema } from "./config-schema.js";
export type { Daemon, DaemonOptions } from "./daemon.js";
export { startDaemon } from "./daemon.js";
export type { DaemonLogger } from "./logger.js";
export { createLogger } from "./logger.js";
export { DEFAULT_SQLITE_PATH, openStore } from "./open-store.js";
export type { RpcServer, RpcServerOptions } from "./rpc-server.js";
export { startRpcServer } from "./rpc-server.js";
export { exportStore, importStore, TransferError } from "./store-transfer.js";
export type { TlsMaterial } from "./tls-material.js";
export { DEFAULT_TLS_PATHS, readTlsMaterial } from "./tls-material.js";
