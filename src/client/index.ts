// The client layer: how anything outside the daemon talks to it. hvctl, the
// node agent, tests and benchmarks share the context file and typed clients.
export { openChannel } from "./channel.js";
export { mergeConfigLayers } from "./config-layers.js";
export type { ResolvedContext, ResolveOptions } from "./context-file.js";
export {
  bearerProblem,
  ContextFileError,
  contextFilePath,
  readContextFile,
  resolveContext,
  selectContext,
  writeContextFile,
} from "./context-file.js";
export type {
  ContextCredential,
  ContextEntry,
  ContextFile,
  ContextFileProblem,
} from "./context-schema.js";
export { checkContextFile } from "./context-schema.js";
export { DirectoryInUseError, lockDirectory } from "./dir-lock.js";
export type { AgentFiles, EnrollOptions } from "./enrollment.js";
export {
  AgentError,
  agentFiles,
  caFingerprint,
  enroll,
  fetchPinnedCa,
  finishAgentFiles,
  pinnedFingerprint,
  renew,
} from "./enrollment.js";
export { finishFileSet, type SetFile, writeFileSet } from "./file-set.js";
export { processAlive, processStartTime } from "./process-alive.js";
export { hideIpSniWarning } from "./quiet-ip-sni.js";
export type {
  RevokedServerList,
  RevokedServers,
  RevokedServersOptions,
  ServerGuard,
} from "./revoked-servers.js";
export { openRevokedServers, REVOKED_SERVERS_FILE } from "./revoked-servers.js";
export type { CallOptions, ServiceClient } from "./service-client.js";
export { createServiceClient } from "./service-client.js";
export type { SystemdNotifier } from "./systemd-notifier.js";
export { createSystemdNotifier } from "./systemd-notifier.js";
export { packageVersion } from "./version.js";
