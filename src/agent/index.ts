// The agent layer: what runs on a hypervisor node. Joining the cluster
// (enroll with a one-time token) and renewing its certificate (client-side
// logic shared with dev mode, in the client layer), and `run`: the
// long-running process holding the node's stream to the control plane and
// running operations on the node's hypervisor.

export type { AgentFiles, EnrollOptions, RevokedServers } from "../client/index.js";
export {
  AgentError,
  agentFiles,
  enroll,
  fetchPinnedCa,
  openRevokedServers,
  REVOKED_SERVERS_FILE,
  renew,
} from "../client/index.js";
export type { AgentConfig } from "./agent-config.js";
export { agentConfigSchema, DEFAULT_AGENT_CONFIG, loadAgentConfig } from "./agent-config.js";
export { lockAgentDirectory } from "./agent-dir-lock.js";
export type { AgentFaults } from "./agent-faults.js";
export { applyFaultCommand, describeFaults, readFaults } from "./agent-faults.js";
export type { AgentLink, AgentLinkOptions } from "./agent-link.js";
export { runAgentLink } from "./agent-link.js";
export { createAgentLogger, runAgent } from "./agent-runner.js";
export { FENCED_OFF_TOLD } from "./fenced-vm-reports.js";
export { FENCED_TOLD_AGAIN } from "./host-boot.js";
export type { LocalStatus } from "./local-status.js";
export { readLocalStatus } from "./local-status.js";
export type { NodeHypervisor } from "./node-hypervisor.js";
export { enrolledNodeId, openNodeHypervisor } from "./node-hypervisor.js";
export type { NodeStorage, NodeStorageStatus } from "./node-storage.js";
export { openNodeStorage, storageStatus } from "./node-storage.js";
export type { ReportDedupe } from "./report-dedupe.js";
export { createReportDedupe } from "./report-dedupe.js";
