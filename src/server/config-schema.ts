// The one configuration schema of debvisor-rpcd, composed of its sections
// (config-*-sections.ts) with the checks that span sections.
import { z } from "zod";
import { fenceDelayAllows, fenceMarginMs, selfFenceWindowMs } from "../cluster/index.js";
import {
  agentsSection,
  clusterSection,
  libvirtSection,
  simulationSection,
  storageSection,
} from "./config-cluster-sections.js";
import { hostPort } from "./config-primitives.js";
import {
  authSection,
  pkiSection,
  rateLimitSection,
  rbacSection,
  tlsSection,
} from "./config-security-sections.js";
import {
  auditSection,
  benchmarkSection,
  devSection,
  limitsSection,
  logSection,
  metricsSection,
  panelSection,
  shutdownSection,
  storeSection,
} from "./config-service-sections.js";

/** The sections of the configuration; {@link configSchema} adds the checks across sections. */
const sections = z.strictObject({
  /** gRPC listen address; TLS always. */
  listen: hostPort.default("127.0.0.1:7443"),
  tls: tlsSection,
  limits: limitsSection,
  log: logSection,
  audit: auditSection,
  metrics: metricsSection,
  auth: authSection,
  rbac: rbacSection,
  pki: pkiSection,
  rateLimit: rateLimitSection,
  store: storeSection,
  shutdown: shutdownSection,
  cluster: clusterSection,
  libvirt: libvirtSection,
  storage: storageSection,
  dev: devSection,
  simulation: simulationSection,
  agents: agentsSection,
  panel: panelSection,
  benchmark: benchmarkSection,
});

/**
 * The one configuration schema of debvisor-rpcd. The YAML file, the
 * environment variables and the flags all map onto it; unknown keys are
 * rejected. Every limit a library leaves unlimited has a bound here.
 */
export const configSchema = sections.superRefine((c, ctx) => {
  const window = selfFenceWindowMs(c.cluster.fenceDelayMs, c.cluster.selfFenceWindowMs);
  if (!fenceDelayAllows(c.cluster.fenceDelayMs, window))
    ctx.addIssue({
      code: "custom",
      path: ["cluster", "fenceDelayMs"],
      message: `must be at least the self-fence window (${window} ms) plus a margin of ${fenceMarginMs(window)} ms, or a VM could run twice`,
    });
  for (const key of ["skipRateLimit", "skipAuthorization"] as const) {
    if (c.benchmark[key] && !isLoopback(c.listen))
      ctx.addIssue({
        code: "custom",
        path: ["benchmark", key],
        message: "a benchmark setting, refused unless listen is a loopback address",
      });
  }
});

/** True for 127.0.0.0/8, [::1] and localhost. */
function isLoopback(hostPort: string): boolean {
  const host = hostPort.slice(0, hostPort.lastIndexOf(":"));
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host) || host === "[::1]" || host === "localhost";
}

/** Validated, fully-defaulted, frozen configuration. */
export type Config = Readonly<z.infer<typeof configSchema>>;
