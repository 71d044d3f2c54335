// The agent layer: what runs on a hypervisor node. Today: joining the
// cluster (enroll with a one-time token) and renewing its certificate.

export type { AgentFiles, EnrollOptions } from "./enrollment.js";
export { AgentError, agentFiles, enroll, fetchPinnedCa, renew } from "./enrollment.js";
