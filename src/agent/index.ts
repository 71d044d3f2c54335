// The agent layer: what runs on a hypervisor node. Today: joining the
// cluster (enroll with a one-time token) and renewing its certificate; the
// client-side logic lives in the client layer, shared with dev mode.

export type { AgentFiles, EnrollOptions } from "../client/index.js";
export { AgentError, agentFiles, enroll, fetchPinnedCa, renew } from "../client/index.js";
