// The daemon and the node agent share one sd_notify implementation (client layer).
export type { SystemdNotifier } from "../client/index.js";
export { createSystemdNotifier } from "../client/index.js";
